// The search page: a photo in; its garments drawn on it; each garment's similar catalog items out.
// Talks to the JSON API of the same server (POST /similar, GET /facets, GET /items/<sku>/image).

const $ = (id) => document.getElementById(id);
const MIN_DRAG = 8; // pixels on screen: a shorter drag is a click, not a region

const state = {
  image: null, // the query: {blob} (an upload) or {url} (an image URL)
  answer: null, // the last /similar answer
  selected: 0, // the garment whose results are shown
  region: null, // a drawn box [x1, y1, x2, y2] in the photo's pixels, or null: every garment
  request: 0, // the newest request: older answers are dropped
  started: 0, // when the current photo was given (performance.now())
};
window.clothesSearch = { firstResultsMs: null, lastSearchMs: null }; // measured, read by the browser tests

// -- the query ------------------------------------------------------------------------------------

function filterParams() {
  const form = $("filters");
  const params = new URLSearchParams();
  params.set("k", String(Math.max(1, Math.min(Number($("k").value) || 20, Number($("k").max) || 100))));
  params.set("rerank", $("rerank").checked ? "k_reciprocal" : "none");
  for (const name of ["price_min", "price_max"]) {
    const value = form.elements[name].value.trim();
    if (value) params.set(name, value);
  }
  if ($("in-stock").checked) params.set("in_stock", "true");
  for (const box of form.querySelectorAll("input[data-facet]:checked")) {
    params.append(box.dataset.facet, box.value);
  }
  for (const select of form.querySelectorAll("select[data-attribute]")) {
    if (select.value) params.set(`attr.${select.dataset.attribute}`, select.value);
  }
  return params;
}

async function search() {
  if (!state.image) return;
  const id = ++state.request;
  const params = filterParams();
  params.set("garment", state.region ? state.region.map((v) => Math.round(v)).join(",") : "all");
  let request;
  if (state.image.blob) {
    request = fetch(`/similar?${params}`, {
      method: "POST",
      body: state.image.blob,
      headers: { "Content-Type": state.image.blob.type || "application/octet-stream" },
      credentials: "same-origin",
    });
  } else {
    params.set("image_url", state.image.url);
    request = fetch(`/similar?${params}`, { credentials: "same-origin" });
  }
  showStatus("Searching…");
  const asked = performance.now();
  let reply;
  let body;
  try {
    reply = await request;
    body = await reply.json().catch(() => null);
  } catch (error) {
    if (id === state.request) showError(`The server did not answer (${error.message}).`);
    return;
  }
  if (id !== state.request) return; // a newer search was started meanwhile
  if (!reply.ok) {
    showError(errorMessage(reply.status, body));
    return;
  }
  state.answer = body;
  if (state.region === null) state.selected = Math.min(state.selected, body.garments.length - 1);
  drawBoxes();
  showResults();
  const now = performance.now();
  window.clothesSearch.lastSearchMs = now - asked;
  if (window.clothesSearch.firstResultsMs === null) window.clothesSearch.firstResultsMs = now - state.started;
  showTimings(body.timings_ms, now - asked);
}

function errorMessage(status, body) {
  const error = body && body.error ? body.error : null;
  const detail = error ? error.message : `HTTP ${status}`;
  const advice = {
    400: "Check the image URL or the filters.",
    401: "Sign in to search.",
    403: "Your key may not search.",
    413: "Use a smaller photo.",
    415: "Try another photo.",
    422: "Drag on the photo to choose the garment yourself.",
    429: "Too many searches: wait a moment.",
    502: "The image URL could not be fetched.",
    503: "The search is not available right now: try again shortly.",
    504: "The image URL took too long to answer.",
  }[status];
  const sentence = `${detail.charAt(0).toUpperCase()}${detail.slice(1)}`.replace(/([^.!?])$/, "$1.");
  return advice ? `${sentence} ${advice}` : sentence;
}

// -- giving a photo ---------------------------------------------------------------------------------

function usePhoto(image, displayUrl) {
  state.image = image;
  state.answer = null;
  state.selected = 0;
  state.region = null;
  state.started = performance.now();
  window.clothesSearch.firstResultsMs = null;
  const photo = $("photo");
  $("photo-frame").hidden = false;
  $("boxes").replaceChildren();
  $("results").replaceChildren();
  photo.onload = () => drawBoxes();
  photo.src = displayUrl;
  $("drop-zone").dataset.state = "given";
  search();
}

function useFile(file) {
  if (!file) return;
  if (file.type && !file.type.startsWith("image/")) {
    showError(`${file.name} is not an image (${file.type}). Use a JPEG, PNG or WebP photo.`);
    return;
  }
  usePhoto({ blob: file }, URL.createObjectURL(file));
}

function setUpGiving() {
  const zone = $("drop-zone");
  $("file-input").addEventListener("change", (event) => useFile(event.target.files[0]));
  zone.addEventListener("click", (event) => {
    if (event.target.tagName !== "LABEL") $("file-input").click();
  });
  zone.addEventListener("keydown", (event) => {
    if (event.key === "Enter" || event.key === " ") {
      event.preventDefault();
      $("file-input").click();
    }
  });
  zone.addEventListener("dragover", (event) => {
    event.preventDefault();
    zone.classList.add("over");
  });
  zone.addEventListener("dragleave", () => zone.classList.remove("over"));
  zone.addEventListener("drop", (event) => {
    event.preventDefault();
    zone.classList.remove("over");
    useFile(event.dataTransfer.files[0]);
  });
  document.addEventListener("paste", (event) => {
    const item = [...(event.clipboardData?.items || [])].find((i) => i.type.startsWith("image/"));
    if (item) useFile(item.getAsFile());
  });
  $("url-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const url = $("url-input").value.trim();
    if (url) usePhoto({ url }, url);
  });
}

// -- the garments on the photo ----------------------------------------------------------------------

function scaleOfPhoto() {
  const photo = $("photo");
  return photo.naturalWidth ? photo.clientWidth / photo.naturalWidth : 0;
}

function placeBox(element, box) {
  const scale = scaleOfPhoto();
  element.style.left = `${box[0] * scale}px`;
  element.style.top = `${box[1] * scale}px`;
  element.style.width = `${(box[2] - box[0]) * scale}px`;
  element.style.height = `${(box[3] - box[1]) * scale}px`;
}

function drawBoxes() {
  const layer = $("boxes");
  layer.replaceChildren();
  if (!state.answer || !scaleOfPhoto()) return;
  const area = (box) => (box[2] - box[0]) * (box[3] - box[1]);
  const bySize = state.answer.garments.map((g, i) => [area(g.box), i]).sort((a, b) => a[0] - b[0]);
  state.answer.garments.forEach((garment, index) => {
    const button = document.createElement("button");
    button.type = "button";
    button.className = "garment-box";
    button.dataset.index = String(index);
    button.dataset.category = garment.category;
    const drawn = state.region !== null;
    button.setAttribute("aria-pressed", String(index === state.selected));
    button.setAttribute(
      "aria-label",
      drawn ? "The region you drew" : `${garment.category}, found with score ${garment.score.toFixed(2)}`,
    );
    const label = document.createElement("span");
    label.textContent = drawn ? "your region" : garment.category;
    button.append(label);
    if (drawn) button.classList.add("drawn");
    placeBox(button, garment.box);
    // a smaller garment lies on top of a larger one that holds it (a top inside the full body)
    button.style.zIndex = String(100 - bySize.findIndex(([, i]) => i === index));
    button.addEventListener("click", (event) => {
      event.stopPropagation();
      state.selected = index;
      drawBoxes();
      showResults();
    });
    layer.append(button);
  });
}

function setUpDrawing() {
  // A drag anywhere on the photo (over a garment too) draws a region; a click on a garment picks it.
  const stage = $("photo-stage");
  const rect = $("draw-box");
  let start = null; // where the pointer went down, in screen pixels over the photo
  let drawing = false;
  let swallowClick = false;
  const point = (event) => {
    const bounds = $("photo").getBoundingClientRect();
    return [
      Math.max(0, Math.min(event.clientX - bounds.left, bounds.width)),
      Math.max(0, Math.min(event.clientY - bounds.top, bounds.height)),
    ];
  };
  const region = (a, b) => [Math.min(a[0], b[0]), Math.min(a[1], b[1]), Math.max(a[0], b[0]), Math.max(a[1], b[1])];
  stage.addEventListener("pointerdown", (event) => {
    if (!state.image || event.button !== 0) return;
    start = point(event);
    drawing = false;
  });
  stage.addEventListener("pointermove", (event) => {
    if (!start) return;
    const here = point(event);
    if (!drawing && Math.max(Math.abs(here[0] - start[0]), Math.abs(here[1] - start[1])) < MIN_DRAG) return;
    if (!drawing) {
      drawing = true;
      stage.setPointerCapture(event.pointerId);
    }
    rect.hidden = false;
    placeBox(rect, region(start, here).map((v) => v / scaleOfPhoto()));
  });
  stage.addEventListener("pointerup", (event) => {
    if (!start) return;
    const begun = start;
    start = null;
    if (!drawing) return; // a click: a garment's own handler takes it
    drawing = false;
    swallowClick = true; // the click that ends a drag is not a garment's
    rect.hidden = true;
    const scale = scaleOfPhoto();
    state.region = region(begun, point(event)).map((v) => v / scale);
    state.selected = 0;
    search();
  });
  stage.addEventListener(
    "click",
    (event) => {
      if (swallowClick) {
        swallowClick = false;
        event.stopPropagation();
      }
    },
    true,
  );
}

// -- the results --------------------------------------------------------------------------------------

const money = (price, currency) => (price === null ? "" : `${price}${currency ? ` ${currency}` : ""}`);

function showResults() {
  const list = $("results");
  list.replaceChildren();
  hideError();
  const garment = state.answer?.garments[state.selected];
  if (!garment) return;
  const what = state.region ? "the region you drew" : `the ${garment.category}`;
  showStatus(garment.results.length ? `${garment.results.length} items like ${what}.` : `Nothing matches ${what} with these filters.`);
  for (const result of garment.results) list.append(resultCard(result));
}

function resultCard(result) {
  const item = result.item;
  const card = document.createElement("li");
  card.className = "result";
  card.dataset.sku = result.sku;
  card.dataset.rank = String(result.rank);
  const picture = document.createElement("div");
  picture.className = "thumb";
  if (item.image) {
    // the picture in a frame of its own proportions, so that the crop's outline lies on the garment
    const frame = document.createElement("div");
    frame.className = "frame";
    frame.style.setProperty("--w", String(item.image.width));
    frame.style.setProperty("--h", String(item.image.height));
    const img = document.createElement("img");
    img.src = item.image.url;
    img.alt = item.title || result.sku;
    img.loading = "lazy";
    img.decoding = "async";
    frame.append(img);
    picture.append(frame);
    const outline = document.createElement("div");
    outline.className = "crop-outline";
    const [x1, y1, x2, y2] = result.crop.box;
    Object.assign(outline.style, {
      left: `${(100 * x1) / item.image.width}%`,
      top: `${(100 * y1) / item.image.height}%`,
      width: `${(100 * (x2 - x1)) / item.image.width}%`,
      height: `${(100 * (y2 - y1)) / item.image.height}%`,
    });
    outline.title = `matched crop: ${result.crop.category}`;
    frame.append(outline);
  } else {
    picture.classList.add("no-image");
    picture.textContent = "no picture";
  }
  const title = document.createElement("h3");
  title.textContent = item.title || result.sku;
  const facts = document.createElement("p");
  facts.className = "facts";
  const parts = [
    item.brand && `<span class="brand"></span>`,
    `<span class="price"></span>`,
    `<span class="stock ${item.in_stock ? "in" : "out"}">${item.in_stock ? "in stock" : "out of stock"}</span>`,
  ].filter(Boolean);
  facts.innerHTML = parts.join(" · ");
  const brand = facts.querySelector(".brand");
  if (brand) brand.textContent = item.brand;
  facts.querySelector(".price").textContent = money(item.price, item.currency) || "no price";
  const meta = document.createElement("p");
  meta.className = "meta";
  meta.innerHTML = `<span class="rank"></span> · <span class="sku"></span> · score <span class="score"></span>`;
  meta.querySelector(".rank").textContent = `#${result.rank}`;
  meta.querySelector(".sku").textContent = result.sku;
  meta.querySelector(".score").textContent = result.score.toFixed(3);
  const more = document.createElement("button");
  more.type = "button";
  more.className = "more-like-this";
  more.textContent = "More like this";
  more.disabled = !item.image;
  more.setAttribute("aria-label", `More like ${item.title || result.sku}`);
  more.addEventListener("click", () => moreLikeThis(result));
  card.append(picture, title, facts, meta, more);
  return card;
}

async function moreLikeThis(result) {
  const image = result.item.image;
  const reply = await fetch(image.url, { credentials: "same-origin" });
  if (!reply.ok) {
    showError(`The picture of ${result.sku} could not be loaded (HTTP ${reply.status}).`);
    return;
  }
  const blob = await reply.blob();
  const bitmap = await createImageBitmap(blob);
  const scale = bitmap.width / image.width; // the thumbnail is the item's image, smaller
  usePhoto({ blob }, URL.createObjectURL(blob));
  state.region = result.crop.box.map((v) => v * scale);
  search();
}

// -- messages ------------------------------------------------------------------------------------------

function showStatus(text) {
  $("status").textContent = text;
}

function showError(text) {
  const box = $("error");
  box.textContent = text;
  box.hidden = false;
  showStatus("");
  $("results").replaceChildren();
}

function hideError() {
  $("error").hidden = true;
}

function showTimings(timings, roundTripMs) {
  const stages = Object.entries(timings || {}).map(([stage, ms]) => `${stage} ${Math.round(ms)} ms`);
  $("timings").textContent = `${stages.join(" · ")} · round trip ${Math.round(roundTripMs)} ms`;
}

// -- filters from the catalog's facets -------------------------------------------------------------------

async function loadFacets() {
  const reply = await fetch("/facets", { credentials: "same-origin" });
  if (!reply.ok) return;
  const facets = await reply.json();
  fillChoices($("facet-category"), "category", facets.category);
  fillChoices($("facet-brand"), "brand", facets.brand);
  const attributes = $("facet-attributes");
  attributes.replaceChildren();
  for (const [name, values] of Object.entries(facets.attributes || {})) {
    if (!values.length) continue;
    const label = document.createElement("label");
    label.textContent = `${name[0].toUpperCase()}${name.slice(1)} `;
    const select = document.createElement("select");
    select.dataset.attribute = name;
    select.id = `attr-${name}`;
    select.append(new Option("any", ""));
    for (const { value, count } of values) select.append(new Option(`${value} (${count})`, String(value)));
    label.append(select);
    attributes.append(label);
  }
  if (facets.price.min !== null) {
    $("price-min").placeholder = facets.price.min;
    $("price-max").placeholder = facets.price.max;
  }
}

function fillChoices(fieldset, facet, values) {
  fieldset.querySelectorAll("label").forEach((label) => label.remove());
  fieldset.hidden = !values.length;
  for (const { value, count } of values) {
    const label = document.createElement("label");
    const box = document.createElement("input");
    box.type = "checkbox";
    box.value = value;
    box.dataset.facet = facet;
    label.append(box, ` ${value} `);
    const small = document.createElement("small");
    small.textContent = `(${count})`;
    label.append(small);
    fieldset.append(label);
  }
}

function setUpFilters() {
  let timer = null;
  const rerun = () => {
    clearTimeout(timer);
    timer = setTimeout(search, 250);
  };
  $("filters").addEventListener("change", rerun);
  $("filters").addEventListener("submit", (event) => {
    event.preventDefault();
    search();
  });
  $("clear-filters").addEventListener("click", () => {
    $("filters").querySelectorAll("input[data-facet]").forEach((box) => (box.checked = false));
    $("filters").querySelectorAll("select").forEach((select) => (select.value = ""));
    $("price-min").value = "";
    $("price-max").value = "";
    $("in-stock").checked = false;
    search();
  });
}

window.addEventListener("resize", drawBoxes);
setUpGiving();
setUpDrawing();
setUpFilters();
loadFacets();
