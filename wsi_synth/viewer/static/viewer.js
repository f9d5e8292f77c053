// wsi-synth view: one OpenSeadragon viewer per slide, the class map as a second tiled image with an opacity, the
// legend in the model's colours, GeoJSON outlines as an SVG overlay, a scale bar from the MPP, and two slides kept in
// step in physical units (µm), so a real slide and a synthetic one of another MPP show the same field.
"use strict";

const params = new URLSearchParams(location.search);
const controls = {
  mask: document.getElementById("mask"),
  opacity: document.getElementById("opacity"),
  outlines: document.getElementById("outlines"),
};
controls.mask.checked = params.get("overlay") === "1";
controls.opacity.value = params.get("opacity") || controls.opacity.value;
controls.outlines.checked = params.get("outlines") === "1";

function tileSource(slide, index, kind) {
  return {
    width: slide.width, height: slide.height, tileSize: slide.tile, tileOverlap: 0,
    minLevel: 0, maxLevel: slide.max_level,
    getTileUrl: (level, x, y) => `/tiles/${index}/${kind}/${level}/${x}_${y}.${kind === "image" ? "jpg" : "png"}`,
  };
}

function niceLength(um) {
  const step = Math.pow(10, Math.floor(Math.log10(um)));
  for (const m of [5, 2, 1]) if (m * step <= um) return m * step;
  return step;
}

function scaleBar(viewer, slide, element) {
  if (!slide.mpp) { element.style.display = "none"; return; }
  const update = () => {
    const imageZoom = viewer.viewport.viewportToImageZoom(viewer.viewport.getZoom(true));
    const umPerScreenPx = slide.mpp / imageZoom;
    const um = niceLength(umPerScreenPx * 150);
    element.style.width = `${um / umPerScreenPx}px`;
    element.firstChild.textContent = um >= 1000 ? `${um / 1000} mm` : `${um} µm`;
  };
  viewer.addHandler("animation", update);
  viewer.addHandler("open", update);
}

async function outlinesOverlay(viewer, slide, index) {
  if (!slide.outlines) return null;
  const shapes = await (await fetch(`/api/slides/${index}/outlines`)).json();
  const svg = document.createElementNS("http://www.w3.org/2000/svg", "svg");
  svg.setAttribute("class", "outlines");
  svg.setAttribute("viewBox", `0 0 ${slide.width} ${slide.height}`);
  svg.setAttribute("preserveAspectRatio", "none");
  for (const shape of shapes) {
    const path = document.createElementNS("http://www.w3.org/2000/svg", "path");
    path.setAttribute("d", shape.rings.map(r => "M" + r.map(p => p.join(",")).join("L") + "Z").join(""));
    path.setAttribute("stroke", `rgb(${shape.color.join(",")})`);
    svg.appendChild(path);
  }
  viewer.addOverlay({ element: svg, location: new OpenSeadragon.Rect(0, 0, 1, slide.height / slide.width) });
  return svg;
}

// OpenSeadragon sizes its canvas in pixels and stretches it to its pane with CSS (100 %); when the pane grows, one
// frame can show the old pixels stretched, out of proportion. Sizing the canvas in CSS pixels from its own pixel size
// leaves that frame with a strip to fill instead, never a stretched slide (headless screenshots resize the page).
function keepCanvasUnstretched(viewer) {
  const fit = () => {
    const canvas = viewer.drawer && viewer.drawer.canvas;
    if (!canvas || !canvas.width) return;
    const density = OpenSeadragon.pixelDensity || 1;
    canvas.style.width = `${canvas.width / density}px`;
    canvas.style.height = `${canvas.height / density}px`;
  };
  for (const event of ["open", "resize", "update-viewport", "animation"]) viewer.addHandler(event, fit);
  window.addEventListener("resize", () => viewer.forceResize());
}

function showLegend(slides) {
  const seen = new Map();
  for (const s of slides) for (const c of s.classes) if (!seen.has(c.name)) seen.set(c.name, c.color || [255, 0, 255]);
  document.getElementById("legend").innerHTML = [...seen].map(
    ([name, rgb]) => `<span class="class"><i style="background: rgb(${rgb.join(",")})"></i>${name}</span>`).join("");
}

function keepInStep(a, b) {
  let busy = false;
  const follow = (from, to) => () => {
    if (busy) return;
    busy = true;
    const center = from.viewer.viewport.viewportToImageCoordinates(from.viewer.viewport.getCenter(true));
    const um = { x: center.x * (from.slide.mpp || 1), y: center.y * (from.slide.mpp || 1) };
    const target = new OpenSeadragon.Point(um.x / (to.slide.mpp || 1), um.y / (to.slide.mpp || 1));
    const imageZoom = from.viewer.viewport.viewportToImageZoom(from.viewer.viewport.getZoom(true));
    const toZoom = imageZoom * (to.slide.mpp || 1) / (from.slide.mpp || 1);
    to.viewer.viewport.zoomTo(to.viewer.viewport.imageToViewportZoom(toZoom), null, true);
    to.viewer.viewport.panTo(to.viewer.viewport.imageToViewportCoordinates(target), true);
    busy = false;
  };
  for (const event of ["zoom", "pan"]) {
    a.viewer.addHandler(event, follow(a, b));
    b.viewer.addHandler(event, follow(b, a));
  }
}

async function main() {
  const slides = await (await fetch("/api/slides")).json();
  const panes = document.getElementById("panes");
  showLegend(slides);
  const opened = [];
  slides.forEach((slide, index) => {
    const pane = document.createElement("div");
    pane.className = "pane";
    pane.innerHTML = `<div class="osd" id="osd${index}"></div><div class="name">${slide.name}` +
      `${slide.mpp ? ` · ${slide.mpp.toFixed(3)} µm/px` : ""}</div><div class="scalebar"><span></span></div>`;
    panes.appendChild(pane);
    const viewer = OpenSeadragon({
      id: `osd${index}`, prefixUrl: "/static/openseadragon/images/", showNavigator: true,
      tileSources: tileSource(slide, index, "image"), immediateRender: true, crossOriginPolicy: false,
      drawer: "canvas",  // 2-D canvas: what every browser, headless ones included, draws the same
    });
    keepCanvasUnstretched(viewer);
    scaleBar(viewer, slide, pane.querySelector(".scalebar"));
    const entry = { viewer, slide, mask: null, svg: null };
    viewer.addHandler("open", async () => {
      if (slide.mask) {
        viewer.addTiledImage({
          tileSource: tileSource(slide, index, "mask"), opacity: controls.mask.checked ? +controls.opacity.value : 0,
          success: (event) => { entry.mask = event.item; },
        });
      }
      entry.svg = await outlinesOverlay(viewer, slide, index);
      if (entry.svg) entry.svg.style.visibility = controls.outlines.checked ? "visible" : "hidden";
    });
    opened.push(entry);
  });
  const restyle = () => {
    for (const e of opened) {
      if (e.mask) e.mask.setOpacity(controls.mask.checked ? +controls.opacity.value : 0);
      // visibility, not display: OpenSeadragon sets an overlay's display on every frame
      if (e.svg) e.svg.style.visibility = controls.outlines.checked ? "visible" : "hidden";
    }
  };
  for (const c of Object.values(controls)) c.addEventListener("input", restyle);
  if (opened.length === 2) keepInStep(opened[0], opened[1]);
}

// after the style sheet applies: a viewer measures its pane once when it is made
if (document.readyState === "complete") main(); else window.addEventListener("load", main);
