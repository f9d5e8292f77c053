"""Performance benchmarks: wall time, throughput and peak memory of each part of the pipeline."""
