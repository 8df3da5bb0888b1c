// The planners' map: priorities from the service's vector tiles, filters, a ranked table, a municipio panel,
// a choice of bundled profile, weight sliders that post a custom profile to /v1/scores (or, for a fitted
// profile, its cross-validated fit instead), and a validation panel that posts a reference table to
// /v1/validation and plots it against the scores, a colour mode for the change since a baseline
// (/v1/priorities/changes) and, in the panel, an inline-SVG chart of a series (/v1/municipalities/{pcode}/series).
// Vanilla JS, no build step, nothing external.
"use strict";
(() => {
  const PILLARS = ["I", "II", "III", "IV", "V"];
  const COUNTRIES = ["GTM", "HND", "SLV"];
  const PROFILE = "root-causes-2021"; // the default profile, and the one the vector tiles carry
  const SCENARIO_DRAWS = 100; // enough for an interval while sliding; the bundled profile uses 1000
  const DEBOUNCE_MS = 400;
  // Okabe-Ito: tells the five pillars apart for colour-blind readers too
  const PILLAR_COLOURS = { I: "#e69f00", II: "#56b4e9", III: "#009e73", IV: "#d55e00", V: "#cc79a7" };
  const SCORE_STOPS = [0, "#ffffcc", 25, "#fed976", 50, "#fd8d3c", 75, "#e31a1c", 100, "#800026"];
  const NOT_RANKED = "#cfcfcf";
  const COUNTRY_NAMES = { GTM: "Guatemala", HND: "Honduras", SLV: "El Salvador" };
  const TOP_COEFFICIENTS = 5; // the largest non-zero coefficients of a fitted profile shown per country
  const TIER_COLOURS = { 1: "#b2182b", 2: "#ef8a62", 3: "#67a9cf" };
  const MAX_UNMATCHED = 25; // unmatched reference rows listed (the count says how many in all)
  const MAX_DISAGREEMENTS = 5;
  const SRC = { source: "priorities", sourceLayer: "priorities" }; // a feature-state target
  const LAYER_SRC = { source: "priorities", "source-layer": "priorities" };
  // change since a baseline: score now − then in seven classes, ColorBrewer PuOr (diverging, colour-blind safe):
  // orange = more priority now, purple = less, near-white = within ±1 point
  const CHANGE_STOPS = [-10, -5, -1, 1, 5, 10];
  const CHANGE_COLOURS = ["#542788", "#998ec3", "#d8daeb", "#f7f7f7", "#fee0b6", "#f1a340", "#b35806"];
  const NO_CHANGE = -9999; // the match fallback: a municipio without a score on one side
  // the series shown in the panel, per country: emigration by year of departure where the census gives it,
  // else the hazard history
  const SERIES = { SV: "slv_emigrants_per_1000_year", GT: "hydromet_events_year", HN: "hurricanes_within_100km_season" };

  const $ = (sel) => document.querySelector(sel);
  const url = (path) => new URL(path, document.baseURI).href; // relative to the page: works under a prefix
  const esc = (s) => String(s ?? "").replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
  const params = new URLSearchParams(location.search);
  const pick = (value, allowed) => (allowed.includes(value) ? value : "");
  const weight = (v, max, dflt) => (v !== null && v !== "" && Number.isFinite(+v) ? Math.min(max, Math.max(0, +v)) : dflt);

  const state = {
    lang: params.get("lang") === "en" ? "en" : "es",
    colour: ["pillar", "change"].includes(params.get("color")) ? params.get("color") : "score",
    baselines: null, // GET /v1/baselines, once asked for
    baseline: params.get("baseline") || "", // the chosen baseline's name ("" = the newest)
    changes: null, // {name, byPcode, expr} of GET /v1/priorities/changes for the chosen profile
    filter: {
      country: pick(params.get("country"), COUNTRIES),
      pillar: pick(params.get("pillar"), PILLARS),
      tier: pick(params.get("tier"), ["1", "2", "3"]),
    },
    profiles: new Map(), // the bundled profiles from /v1/profiles, by id
    profile: PROFILE, spec: null, defaults: null, weights: null, hash: "",
    scenario: false, // true when the weights differ from the chosen profile's: results come from POST /v1/scores
    overlay: null, // {byPcode, expr} when the map cannot use the tiles' (default profile's) properties
    fits: new Map(), // fitted profile id → {status: "loading" | "ready" | "error", fit, error}
    validation: null, // the last answer of POST /v1/validation, and whether a weight scenario was on
    rows: [], sources: {}, catalogue: new Map(), selected: null, hoverId: null, selectedId: null, panelData: null, seq: 0, weightSeq: 0,
  };
  const t = (key) => window.I18N[state.lang][key] ?? key;
  const fmt = (v, digits = 2) =>
    v === null || v === undefined ? "–" : new Intl.NumberFormat(state.lang, { maximumFractionDigits: digits }).format(v);

  // a new scenario the service has not computed within its wait answers 202 and a job to poll: poll it
  // (fetch follows the 303 to the result when the job is done); a failed job's message is thrown
  async function fetchResult(path, init) {
    let r = await fetch(url(path), init);
    if (r.status !== 202) return r;
    const job = r.headers.get("Location");
    for (;;) {
      await new Promise((done) => setTimeout(done, 1000));
      r = await fetch(job);
      if (r.redirected || !r.ok) return r;
      const { status, error } = await r.json();
      if (status !== "queued" && status !== "running") throw new Error(error?.description || status);
    }
  }
  async function getJSON(path, init) {
    const r = await fetchResult(path, init);
    if (!r.ok) {
      const body = await r.json().catch(() => ({}));
      throw new Error(body.description || `${r.status} ${path}`);
    }
    return r.json();
  }
  // the filters, and the chosen profile when it is not the default (so default links stay short)
  const filterQuery = (extra = {}) => {
    const q = new URLSearchParams();
    if (state.profile !== PROFILE) q.set("profile", state.profile);
    for (const [k, v] of Object.entries(state.filter)) if (v) q.set(k, v);
    for (const [k, v] of Object.entries(extra)) q.set(k, v);
    return q;
  };
  const scenarioQuery = (extra = {}) => { // POST /v1/scores: the profile is the body, not a parameter
    const q = filterQuery(extra);
    q.delete("profile");
    return q;
  };
  const hasPillar = (p) => Boolean(state.spec && state.spec.pillars && state.spec.pillars[p]);
  const weightKeys = () => PILLARS.filter(hasPillar).concat("migration");
  const regionScope = () => Boolean(state.spec && state.spec.scope === "region");
  // a fitted profile (an `empirical` block) is not weighted: no sliders, no scenario, its fit instead
  const fitted = () => Boolean(state.spec && state.spec.empirical);
  const scenarioSpec = () => ({
    ...state.spec, id: "map-scenario", title: `Map scenario (${state.profile})`, draws: SCENARIO_DRAWS,
    pillar_weights: { ...state.spec.pillar_weights, ...Object.fromEntries(PILLARS.filter(hasPillar).map((p) => [p, state.weights[p]])) },
    migration_weight: state.weights.migration,
  });
  const post = () => ({ method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(scenarioSpec()) });
  // the same filters against the chosen bundled profile (GET) or the scenario (POST)
  const scores = (extra) =>
    state.scenario ? getJSON(`v1/scores?${scenarioQuery(extra)}`, post()) : getJSON(`v1/priorities?${filterQuery(extra)}`);
  const showError = (err) => {
    const box = $("#error");
    box.textContent = `${t("loadError")}: ${err.message}`;
    box.hidden = false;
  };

  // ---- map styling: the tiles carry the default profile; another profile or a scenario overrides them
  // through `match` on pcode
  const field = (name) => (state.overlay ? state.overlay.expr[name] : ["get", name]);
  const scoreExpr = () => ["number", ["coalesce", field("score"), -1], -1];
  function colourExpr() {
    if (state.colour === "change") {
      if (!state.changes) return NOT_RANKED;
      const v = state.changes.expr;
      return ["case", ["==", v, NO_CHANGE], NOT_RANKED,
        ["step", v, CHANGE_COLOURS[0], ...CHANGE_STOPS.flatMap((x, i) => [x, CHANGE_COLOURS[i + 1]])]];
    }
    if (state.colour === "pillar") {
      return ["match", ["to-string", field("pillar")], ...PILLARS.flatMap((p) => [p, PILLAR_COLOURS[p]]), NOT_RANKED];
    }
    return ["case", [">=", scoreExpr(), 0], ["interpolate", ["linear"], scoreExpr(), ...SCORE_STOPS], NOT_RANKED];
  }
  function filterExpr() {
    const f = ["all"];
    const { country, pillar, tier } = state.filter;
    if (country) f.push(["==", ["get", "country"], country]);
    if (pillar) f.push(["==", ["to-string", field("pillar")], pillar]);
    if (tier) f.push(["==", ["number", ["coalesce", field("tier"), 0], 0], Number(tier)]);
    return f;
  }
  function buildOverlay(items) {
    const byPcode = new Map(items.map((i) => [i.pcode, i]));
    const ranked = items.filter((i) => i.ranked);
    const grouped = (key, values, fallback) => {
      const arms = values.flatMap((v) => {
        const codes = ranked.filter((i) => i[key] === v).map((i) => i.pcode);
        return codes.length ? [codes, v] : [];
      });
      return arms.length ? ["match", ["get", "pcode"], ...arms, fallback] : fallback;
    };
    const score = ranked.length ? ["match", ["get", "pcode"], ...ranked.flatMap((i) => [i.pcode, i.score]), -1] : -1;
    return { byPcode, expr: { score, pillar: grouped("pillar", PILLARS, ""), tier: grouped("tier", [1, 2, 3], 0) } };
  }
  function restyle() {
    if (!map.getLayer("fill")) return;
    map.setPaintProperty("fill", "fill-color", colourExpr());
    map.setFilter("fill", filterExpr());
    renderLegend();
  }

  const map = new maplibregl.Map({
    container: "map",
    style: {
      version: 8,
      sources: { priorities: { type: "vector", url: url("tiles/priorities.json") } },
      layers: [
        { id: "background", type: "background", paint: { "background-color": "#eef1f4" } },
        { id: "base", type: "fill", ...LAYER_SRC, paint: { "fill-color": "#e6e6e6" } },
        { id: "fill", type: "fill", ...LAYER_SRC, paint: { "fill-color": NOT_RANKED } },
        {
          id: "outline", type: "line", ...LAYER_SRC,
          paint: {
            "line-color": ["case", ["boolean", ["feature-state", "selected"], false], "#111",
              ["boolean", ["feature-state", "hover"], false], "#333", "#ffffff"],
            "line-width": ["case", ["boolean", ["feature-state", "selected"], false], 2.5,
              ["boolean", ["feature-state", "hover"], false], 1.5, 0.4],
          },
        },
      ],
    },
    bounds: [-92.25, 12.98, -83.16, 17.82],
    fitBoundsOptions: { padding: 16 },
    attributionControl: { compact: true },
  });
  map.addControl(new maplibregl.NavigationControl({ showCompass: false }), "top-left");
  // the attribution is long: start it folded behind its (i) button
  map.once("idle", () => document.querySelector(".maplibregl-ctrl-attrib")?.classList.remove("maplibregl-compact-show"));

  function setState(id, key, value) {
    if (id !== null && id !== undefined) map.setFeatureState({ ...SRC, id }, { [key]: value });
  }
  const tooltip = $("#tooltip");
  map.on("mousemove", "fill", (e) => {
    const f = e.features[0];
    if (state.hoverId !== f.id) {
      setState(state.hoverId, "hover", false);
      state.hoverId = f.id;
      setState(f.id, "hover", true);
    }
    const row = state.overlay ? state.overlay.byPcode.get(f.properties.pcode) : f.properties;
    const score = row && row.score !== null && row.score !== undefined ? fmt(row.score, 1) : t("notRanked");
    const change = state.colour === "change" && state.changes ? state.changes.byPcode.get(f.properties.pcode) : null;
    tooltip.innerHTML = `<strong>${esc(f.properties.name)}</strong><br>${esc(t("score"))}: ${esc(score)}${
      change ? `<br>${esc(t("scoreChange"))}: ${change.change.score === null ? "–" : signed(change.change.score, 1)}` : ""}`;
    tooltip.style.left = `${e.point.x + 12}px`;
    tooltip.style.top = `${e.point.y + 12}px`;
    tooltip.hidden = false;
    map.getCanvas().style.cursor = "pointer";
  });
  map.on("mouseleave", "fill", () => {
    setState(state.hoverId, "hover", false);
    state.hoverId = null;
    tooltip.hidden = true;
    map.getCanvas().style.cursor = "";
  });
  map.on("click", "fill", (e) => select(e.features[0].properties.pcode, e.features[0].id));

  // ---- the ranked table and downloads
  async function loadTable() {
    const seq = ++state.seq;
    const body = await scores({ limit: 1000 });
    if (seq !== state.seq) return; // a newer filter, profile or scenario has been asked for
    // the service lists by country, then rank; one regional ranking reads best in its own order
    state.rows = regionScope() ? byRegionRank(body.items) : body.items;
    state.hash = body.profile.hash;
    renderTable();
    renderProfile();
  }
  const byRegionRank = (items) =>
    [...items].sort((a, b) => (a.rank_region ?? Infinity) - (b.rank_region ?? Infinity) || a.pcode.localeCompare(b.pcode));
  const rankOf = (r) => (regionScope() ? r.rank_region ?? r.rank : r.rank);
  function renderTable() {
    $("#count").textContent = `(${state.rows.length} ${t("rows")})`;
    $("#rank-head").textContent = regionScope() ? t("regionRank") : "#";
    $("#ranking tbody").innerHTML = state.rows.map((r) => `
      <tr data-pcode="${esc(r.pcode)}"${r.pcode === state.selected ? ' class="selected"' : ""}>
        <td>${esc(rankOf(r) ?? "–")}</td>
        <td><button type="button" class="link" data-pcode="${esc(r.pcode)}">${esc(r.name)}</button></td>
        <td>${esc(r.country)}</td><td class="num">${fmt(r.score, 1)}</td>
        <td>${r.pillar ? `<span class="chip" style="background:${PILLAR_COLOURS[r.pillar]}"></span>${esc(r.pillar)}` : "–"}</td>
        <td>${esc(r.tier ?? "–")}</td></tr>`).join("");
    for (const fmtName of ["csv", "gpkg"]) $(`#dl-${fmtName}`).href = url(`v1/priorities?${filterQuery({ format: fmtName })}`);
  }
  $("#ranking tbody").addEventListener("click", (e) => {
    const b = e.target.closest("button[data-pcode]");
    if (b) select(b.dataset.pcode, null, true);
  });
  async function download(e) {
    if (!state.scenario) return; // the link's GET serves the bundled profile
    e.preventDefault();
    const format = e.currentTarget.id === "dl-csv" ? "csv" : "gpkg";
    const q = scenarioQuery({ format });
    const r = await fetchResult(`v1/scores?${q}`, post());
    if (!r.ok) return showError(new Error(`${r.status}`));
    const a = Object.assign(document.createElement("a"), {
      href: URL.createObjectURL(await r.blob()), download: `priorities-map-scenario-${state.hash}.${format}`,
    });
    a.click();
    setTimeout(() => URL.revokeObjectURL(a.href), 1000);
  }
  $("#dl-csv").addEventListener("click", download);
  $("#dl-gpkg").addEventListener("click", download);

  // ---- the municipio panel
  function featureId(pcode) {
    const f = map.querySourceFeatures("priorities", { sourceLayer: "priorities", filter: ["==", ["get", "pcode"], pcode] });
    return f.length ? f[0].id : null;
  }
  async function select(pcode, id, fly = false) {
    state.selected = pcode;
    setState(state.selectedId, "selected", false);
    state.selectedId = id ?? featureId(pcode);
    setState(state.selectedId, "selected", true);
    renderTable();
    try {
      const [detail, explanation, series] = await Promise.all([
        getJSON(`v1/municipalities/${encodeURIComponent(pcode)}`),
        state.scenario ? state.overlay.byPcode.get(pcode) || null
          : getJSON(`v1/municipalities/${encodeURIComponent(pcode)}/score${state.profile === PROFILE ? "" : `?${new URLSearchParams({ profile: state.profile })}`}`),
        seriesOf(pcode),
      ]);
      if (state.selected !== pcode) return;
      state.panelData = { detail, explanation, series };
      renderPanel();
      // keep the municipio clear of the panel that covers the map's right edge
      if (fly) map.easeTo({ center: detail.centroid, zoom: Math.max(map.getZoom(), 7.5), offset: [-$("#panel").offsetWidth / 2, 0] });
    } catch (err) {
      showError(err);
    }
  }
  const bar = (label, v) => `<div class="bar"><span class="bar-label">${esc(label)}</span>${
    v === null || v === undefined ? `<span class="nodata">${esc(t("noData"))}</span>`
      : `<span class="track"><span style="width:${Math.max(0, Math.min(100, v))}%"></span></span><span class="num">${fmt(v, 1)}</span>`}</div>`;
  // the municipio's series (SERIES by its country), or null when it has none: a 404 here is no error
  async function seriesOf(pcode) {
    const code = SERIES[pcode.slice(0, 2)];
    if (!code) return null;
    const r = await fetch(url(`v1/municipalities/${encodeURIComponent(pcode)}/series?${new URLSearchParams({ indicator: code })}`));
    return r.ok ? r.json() : null;
  }
  // a small line chart of one series: value per period, partial years drawn hollow; inline SVG
  function seriesChart(body) {
    if (!body) return "";
    const ind = body.indicator;
    const pts = body.items.filter((i) => i.value !== null);
    const name = (state.lang === "en" ? ind.name_en : ind.name_es) || ind.code;
    if (pts.length < 2) return `<h3>${esc(t("series"))}</h3><p class="muted">${esc(t("noSeries"))}</p>`;
    const [W, H, L, R, T, B] = [300, 140, 36, 8, 8, 22];
    const ya = niceAxis(Math.min(0, ...pts.map((p) => p.value)), Math.max(...pts.map((p) => p.value)));
    const sx = (k) => L + (pts.length === 1 ? 0 : (k / (pts.length - 1)) * (W - L - R));
    const sy = (y) => T + (1 - (y - ya.a) / (ya.b - ya.a)) * (H - T - B);
    const partial = (p) => p.flags.includes("partial_year");
    const every = Math.ceil(pts.length / 6); // about six period labels
    return `<h3>${esc(t("series"))}: ${esc(name)}</h3>
      <figure class="series" data-indicator="${esc(ind.code)}"><svg viewBox="0 0 ${W} ${H}" role="img"
        aria-label="${esc(`${name}, ${pts[0].period}–${pts[pts.length - 1].period}: ${pts.length} ${t("points")}`)}">
      <rect x="${L}" y="${T}" width="${W - L - R}" height="${H - T - B}" class="frame"/>
      ${ya.ticks.map((y) => `<line class="grid" x1="${L}" x2="${W - R}" y1="${sy(y)}" y2="${sy(y)}"/>
        <text class="tick" x="${L - 4}" y="${sy(y) + 3}" text-anchor="end">${fmt(y)}</text>`).join("")}
      <polyline class="line" points="${pts.map((p, k) => `${sx(k).toFixed(1)},${sy(p.value).toFixed(1)}`).join(" ")}"/>
      ${pts.map((p, k) => `<circle class="pt${partial(p) ? " partial" : ""}" data-period="${esc(p.period)}" cx="${sx(k).toFixed(1)}"
        cy="${sy(p.value).toFixed(1)}" r="2.5"><title>${esc(p.period)}: ${fmt(p.value)}${partial(p) ? ` (${esc(t("partialYear"))})` : ""}</title></circle>
        ${k % every === 0 || k === pts.length - 1 ? `<text class="tick" x="${sx(k)}" y="${H - 6}" text-anchor="middle">${esc(p.period)}</text>` : ""}`).join("")}
    </svg><figcaption class="muted">${esc(ind.unit)} · ${esc(ind.publisher || body.source.publisher)}</figcaption></figure>`;
  }
  // the municipio's change since the baseline, when the map shows it
  function changeBlock(pcode) {
    const c = state.colour === "change" && state.changes ? state.changes.byPcode.get(pcode) : null;
    if (!c) return "";
    const row = (label, a, b, d) => `<tr><th scope="row">${esc(label)}</th><td>${a}</td><td>${b}</td><td class="num">${d}</td></tr>`;
    const moved = c.indicators_moved.map((m) => {
      const i = state.catalogue.get(m.code) || {};
      return `<li data-code="${esc(m.code)}">${esc((state.lang === "en" ? i.name_en : i.name_es) || m.code)}: ${fmt(m.value_then)} → ${fmt(m.value_now)}${
        m.contribution_change !== null ? ` (${signed(m.contribution_change, 2)})` : ""}</li>`;
    }).join("");
    return `<section class="change" data-baseline="${esc(state.changes.name)}"><h3>${esc(t("changeSince"))} «${esc(state.changes.name)}»</h3>
      <table><thead><tr><th></th><th scope="col">${esc(t("then"))}</th><th scope="col">${esc(t("now"))}</th><th scope="col">Δ</th></tr></thead><tbody>
      ${row(t("score"), fmt(c.then.score, 1), fmt(c.now.score, 1), c.change.score === null ? "–" : signed(c.change.score, 1))}
      ${row(t("rank"), esc(c.then.rank ?? "–"), esc(c.now.rank ?? "–"), c.change.rank === null ? "–" : signed(c.change.rank, 0))}
      ${row(t("tier"), esc(c.then.tier ?? "–"), esc(c.now.tier ?? "–"), c.change.tier === null ? "–" : signed(c.change.tier, 0))}
      ${row(t("leadPillar"), esc(c.then.pillar ?? "–"), esc(c.now.pillar ?? "–"), "")}</tbody></table>
      ${moved ? `<p class="muted">${esc(t("movedIndicators"))}:</p><ul class="moved">${moved}</ul>` : ""}</section>`;
  }
  function renderPanel() {
    const { detail: d, explanation: x, series } = state.panelData;
    const s = x || {};
    // the unit's own values first (period, flags); department-level ones only in the catalogue
    const byCode = new Map([...state.catalogue, ...d.indicators.map((i) => [i.code, i])]);
    const nameOf = (i) => (state.lang === "en" ? i.name_en : i.name_es) || i.code;
    const ranked = s.ranked && s.rank !== null;
    const interval = s.rank_interval ? `${s.rank_interval[0]}–${s.rank_interval[1]}` : "–";
    const used = d.indicators.concat((s.top_indicators || []).map((ti) => byCode.get(ti.code) || {}));
    const srcIds = [...new Set(used.map((i) => i.source && i.source.id).filter(Boolean))];
    const source = (id, title) => {
      const m = state.sources[id] || {};
      return `<li><strong>${esc(title || m.title || id)}</strong> — ${esc(m.publisher || "")}${
        m.licence ? `<br><span class="muted">${esc(t("licence"))}: ${esc(m.licence)}</span>` : ""}</li>`;
    };
    $("#panel-title").textContent = d.name;
    $("#panel-body").innerHTML = `
      <p class="muted">${esc(d.pcode)} · ${esc(d.department ? d.department.name : "")} · ${esc(d.country)}
        ${state.scenario ? ` · ${esc(t("scenario"))} <code>${esc(state.hash)}</code>` : ""}</p>
      ${ranked ? `<p class="big">${esc(t("score"))} <strong>${fmt(s.score, 1)}</strong> / 100 · ${esc(t("tier"))} ${esc(s.tier)}</p>
        <p>${esc(t("rank"))} <strong>${esc(regionScope() ? s.rank_region ?? s.rank : s.rank)}</strong>
          (${esc(regionScope() ? t("region") : d.country)}) · ${esc(t("interval"))}: ${esc(interval)}
          · ${esc(s.robust ? t("robust") : t("notRobust"))}<br>${esc(t("pTop"))}: ${fmt(s.p_top * 100, 0)} %</p>
        <p>${esc(t("leadPillar"))}: <strong>${esc(t("pillars")[s.pillar] || "–")}</strong></p>`
        : `<p class="big">${esc(t("notRanked"))}</p>`}
      <p>${esc(t("hotspot"))}: <strong>${esc(s.hotspot ? t(s.hotspot) : t("none"))}</strong>
        · ${esc(t("zone"))}: <strong>${esc(s.zone || t("none"))}</strong>
        · ${esc(t("coverage"))}: ${fmt((s.coverage ?? 0) * 100, 0)} %</p>
      ${changeBlock(d.pcode)}
      <h3>${esc(t("pillarScores"))}</h3>
      ${bar(t("migration").split(" (")[0], s.migration)}
      ${PILLARS.map((p) => bar(t("pillars")[p], s.pillar_scores ? s.pillar_scores[p] : null)).join("")}
      <h3>${esc(t("topIndicators"))}</h3>
      <table class="indicators"><thead><tr><th scope="col"></th><th scope="col">${esc(t("value"))}</th>
        <th scope="col">${esc(t("contribution"))}</th></tr></thead><tbody>
      ${(s.top_indicators || []).map((ti) => {
        const i = byCode.get(ti.code) || { code: ti.code };
        return `<tr class="name"><td>${esc(nameOf(i))}</td><td class="num">${fmt(ti.value)}</td>
          <td class="num">${fmt(ti.contribution, 1)}</td></tr>
          <tr class="meta"><td colspan="3">${esc(i.unit || "")} · ${esc(t("source"))}: ${esc(i.source ? i.source.title : "–")}
          · ${esc(t("period"))}: ${esc(i.period || "–")}${i.flags && i.flags.length ? ` · ${esc(i.flags.join(", "))}` : ""}</td></tr>`;
      }).join("")}</tbody></table>
      ${s.similar && s.similar.length ? `<h3>${esc(t("similar"))}</h3><ul class="similar">${s.similar.map((m) =>
        `<li><button type="button" class="link" data-pcode="${esc(m.pcode)}">${esc(m.name)}</button> (${fmt(m.score, 1)})</li>`).join("")}</ul>` : ""}
      ${seriesChart(series)}
      <h3>${esc(t("provenance"))}</h3>
      <ul class="provenance">${source(d.provenance.source.id, `${t("boundaries")}: ${d.provenance.source.title}`)}
        ${srcIds.map((id) => source(id)).join("")}</ul>`;
    $("#panel").hidden = false;
  }
  $("#panel-body").addEventListener("click", (e) => {
    const b = e.target.closest("button[data-pcode]");
    if (b) select(b.dataset.pcode, null, true);
  });
  function closePanel() {
    $("#panel").hidden = true;
    setState(state.selectedId, "selected", false);
    state.selected = state.selectedId = state.panelData = null;
    renderTable();
  }
  $("#panel-close").addEventListener("click", closePanel);
  document.addEventListener("keydown", (e) => { if (e.key === "Escape" && !$("#panel").hidden) closePanel(); });

  // ---- profile, weights, scenario, URL
  const isDefault = () => weightKeys().every((k) => state.weights[k] === state.defaults[k]);
  function renderSliders() {
    $("#reset").hidden = fitted();
    if (fitted()) {
      $("#sliders").innerHTML = `<p class="profile" id="weights-note">${esc(t("weightsFitted"))}</p>`;
      return;
    }
    // a pillar the profile does not list has no data in it: no slider, only the words "no data"
    const rows = PILLARS.map((p) => [p, t("pillars")[p], 5, 0.5]).concat([["migration", t("migration"), 1, 0.05]]);
    $("#sliders").innerHTML = rows.map(([k, label, max, step]) => (k === "migration" || hasPillar(k) ? `
      <label class="slider"><span>${esc(label)}</span>
        <input type="range" id="w-${k}" data-key="${k}" min="0" max="${max}" step="${step}" value="${state.weights[k]}">
        <output for="w-${k}">${fmt(state.weights[k])}</output></label>` : `
      <div class="slider off" data-pillar="${k}"><span>${esc(label)}</span><span class="nodata">${esc(t("noData"))}</span></div>`)).join("");
  }
  // the chosen profile's spec and default weights; weights from the URL when they are given (a shared link)
  function useProfile(id, fromURL = false) {
    const p = state.profiles.get(id) || state.profiles.get(PROFILE);
    state.profile = p.id;
    state.spec = p.spec;
    state.defaults = {
      ...Object.fromEntries(PILLARS.filter(hasPillar).map((k) => [k, p.spec.pillar_weights[k] ?? 0])),
      migration: p.spec.migration_weight,
    };
    state.weights = Object.fromEntries(Object.entries(state.defaults).map(([k, v]) =>
      [k, fromURL && !fitted() ? weight(params.get(k), k === "migration" ? 1 : 5, v) : v]));
    $("#f-profile").value = state.profile;
    if (fitted()) loadFit(state.profile);
  }
  function renderProfiles() {
    $("#f-profile").innerHTML = [...state.profiles.values()].map((p) =>
      `<option value="${esc(p.id)}">${esc(p.spec.title || p.id)} (${esc(p.id)})</option>`).join("");
    $("#f-profile").value = state.profile;
  }
  // what the ranking means: one regional ranking or one per country, and the profile's own description
  function renderScope() {
    if (!state.spec) return;
    $("#scope-note").innerHTML = `<strong>${esc(state.spec.title || state.profile)}</strong>. ${
      esc(regionScope() ? t("regionNote") : t("countryNote"))}`;
    $("#method-text").textContent = state.spec.description || "–";
  }
  $("#f-profile").addEventListener("change", (e) => {
    useProfile(e.target.value);
    renderSliders();
    renderScope();
    renderFit();
    applyWeights().catch(showError);
  });
  let timer = null;
  function onSlide(e) {
    const k = e.target.dataset.key;
    if (!k) return;
    state.weights[k] = Number(e.target.value);
    e.target.nextElementSibling.textContent = fmt(state.weights[k]);
    clearTimeout(timer);
    timer = setTimeout(() => applyWeights().catch(showError), DEBOUNCE_MS);
  }
  $("#sliders").addEventListener("input", onSlide);
  $("#sliders").addEventListener("change", onSlide);
  $("#reset").addEventListener("click", () => {
    state.weights = { ...state.defaults };
    renderSliders();
    applyWeights().catch(showError);
  });
  // ---- a fitted profile's fit per country, from GET /v1/profiles/{id}. The first request fits the model
  // (up to a minute): it runs on its own, so the map, table and panel of the profile load meanwhile.
  function loadFit(id) {
    const known = state.fits.get(id);
    if (known && known.status !== "error") return;
    state.fits.set(id, { status: "loading" });
    getJSON(`v1/profiles/${encodeURIComponent(id)}`)
      .then((body) => state.fits.set(id, { status: "ready", fit: body.fit || { countries: [] } }))
      .catch((err) => state.fits.set(id, { status: "error", error: err.message }))
      .finally(() => { if (state.profile === id) renderFit(); });
  }
  const signed = (v, digits) => `${v > 0 ? "+" : v < 0 ? "−" : ""}${fmt(Math.abs(v), digits)}`;
  const countryOrder = (a, b) => COUNTRIES.indexOf(a) - COUNTRIES.indexOf(b) || a.localeCompare(b);
  function renderFit() {
    $("#fit").hidden = !fitted();
    if (!fitted()) return;
    const f = state.fits.get(state.profile) || { status: "loading" };
    const body = $("#fit-body");
    $("#fit").dataset.status = f.status;
    body.setAttribute("aria-busy", String(f.status === "loading"));
    if (f.status === "loading") body.innerHTML = `<p class="muted loading">${esc(t("fitLoading"))}</p>`;
    else if (f.status === "error") body.innerHTML = `<p class="v-error">${esc(t("loadError"))}: ${esc(f.error)}</p>`;
    else body.innerHTML = [...f.fit.countries].sort((a, b) => countryOrder(a.country, b.country)).map(fitCountry).join("");
  }
  function fitCountry(c) {
    const ok = c.status === "fitted";
    const oos = c.out_of_sample || {};
    const nameOf = (code) => {
      const i = state.catalogue.get(code) || {};
      return (state.lang === "en" ? i.name_en : i.name_es) || code;
    };
    // a coefficient of 0 is a driver the penalty left out: not among the largest
    const coefs = (c.coefficients || []).filter((k) => k.coefficient !== 0).slice(0, TOP_COEFFICIENTS);
    return `<div class="fit-country" data-country="${esc(c.country)}" data-status="${esc(c.status)}">
      <h3>${esc(COUNTRY_NAMES[c.country] || c.country)} · <span class="status">${esc(ok ? t("fitted") : t("notFitted"))}</span></h3>
      ${ok ? "" : `<p class="muted reason">${esc(c.status)}</p>`}
      <p class="units">${esc(t("unitsWithOutcome"))}: <strong data-key="units">${esc(c.units_with_outcome)}</strong>
        (${esc(c.departments)} ${esc(t("departments"))})</p>
      ${ok ? `<p class="oos">${esc(t("outOfSample"))}: Spearman <strong data-key="spearman">${fmt(oos.spearman)}</strong>
        · R² <strong data-key="r2">${fmt(oos.r2)}</strong></p>
      <p class="coef-head">${esc(t("largestCoefficients"))}:</p>
      ${coefs.length ? `<ul class="coefs">${coefs.map((k) => `<li data-code="${esc(k.code)}" data-pillar="${esc(k.pillar)}" data-coefficient="${esc(k.coefficient)}">
        <span class="chip" style="background:${PILLAR_COLOURS[k.pillar] || NOT_RANKED}"></span>
        <span class="name">${esc(nameOf(k.code))} <span class="muted">(${esc(k.pillar)})</span></span>
        <span class="num">${signed(k.coefficient, 3)}</span></li>`).join("")}</ul>`
        : `<p class="muted">${esc(t("noCoefficient"))}</p>`}` : ""}
    </div>`;
  }

  // ---- validation: the chosen bundled profile against the user's reference table, posted as a form to
  // POST /v1/validation; the answer's figures per country and a scatter plot of its `pairs`
  $("#v-form").addEventListener("submit", async (e) => {
    e.preventDefault();
    const data = new FormData(e.currentTarget);
    data.set("per_capita", $("#v-per-capita").checked ? "true" : "false");
    data.set("profile", state.profile); // a scenario is not stored under an id: its bundled profile is compared
    const scenario = state.scenario;
    state.validation = null; // the previous figures go: they answered another table
    renderValidation();
    $("#v-error").hidden = true;
    $("#v-busy").hidden = false;
    $("#v-submit").disabled = true;
    try {
      const r = await fetch(url("v1/validation"), { method: "POST", body: data });
      const body = await r.json().catch(() => ({}));
      if (!r.ok) throw Object.assign(new Error(body.description || `${r.status}`), { details: body.errors || [] });
      state.validation = { ...body, scenario };
      renderValidation();
    } catch (err) {
      showValidationError(err);
    } finally {
      $("#v-busy").hidden = true;
      $("#v-submit").disabled = false;
    }
  });
  function showValidationError(err) {
    // the service's message says what to fix; its list of bad rows adds any it did not already name
    const extra = (err.details || []).filter((d) => !err.message.includes(d)).slice(0, 10);
    $("#v-error").innerHTML = `<strong>${esc(t("validationError"))}</strong>: ${esc(err.message)}${
      extra.length ? `<ul>${extra.map((d) => `<li>${esc(d)}</li>`).join("")}</ul>` : ""}`;
    $("#v-error").hidden = false;
  }
  const pValue = (p) => (p === null || p === undefined ? "–" : p < 0.001 ? `< ${fmt(0.001, 3)}` : fmt(p, 3));
  const pct = (v) => (v === null || v === undefined ? "–" : `${fmt(v * 100, 0)} %`);
  // the service's notes where a figure cannot be had, in the page's language when they are known
  const NOTES = {
    "fewer than 5 pairs: no correlation": "noteFewPairs",
    "one side is constant: no correlation": "noteConstant",
    "k covers every matched unit: overlap is k by construction": "noteKCoversAll",
  };
  const note = (text) => esc(NOTES[text] ? t(NOTES[text]) : text || "–");
  function spearmanText(s) {
    if (s.rho === null) return `<span class="muted">${note(s.note)} (n = ${esc(s.n)})</span>`;
    return `<strong>${fmt(s.rho)}</strong> (95 %: ${fmt(s.ci95[0])} – ${fmt(s.ci95[1])}; n = ${esc(s.n)})`;
  }
  function topKText(k) {
    if (k.overlap === null) return `<span class="muted">${note(k.note)}</span>`;
    return `<strong>${esc(k.overlap)}</strong> ${esc(t("of"))} ${esc(k.k)} (${esc(t("chance"))}: ${fmt(k.expected_by_chance, 1)};
      p ${pValue(k.p_value).startsWith("<") ? "" : "= "}${pValue(k.p_value)})`;
  }
  function tier1Text(h) {
    return `<strong>${esc(h.hits)}</strong> ${esc(t("of"))} ${esc(h.k)} (${pct(h.hit_rate)}; ${esc(t("chance"))}:
      ${fmt(h.expected_by_chance, 1)}, ${pct(h.chance_rate)}; p ${pValue(h.p_value).startsWith("<") ? "" : "= "}${pValue(h.p_value)})`;
  }
  function renderValidation() {
    const v = state.validation;
    if (!v) {
      $("#v-result").innerHTML = "";
      return;
    }
    const ref = v.reference;
    const notes = [
      ref.level === "municipio" ? t("byMunicipio") : t("byDepartment"),
      `${t("profile")} ${v.profile.id}`,
      ...(v.options.per_capita ? [t("perCapitaShort")] : []),
      ...(ref.direction === -1 ? [t("lowerIsPriority")] : []),
      ...(v.scenario ? [t("scenarioNote")] : []),
    ];
    const counts = [
      [t("rowsRead"), ref.rows, "rows"], [t("matchedRows"), v.matched, "matched"], [t("unmatchedRows"), v.unmatched.length, "unmatched"],
      ...(v.not_ranked.length ? [[t("notRanked"), v.not_ranked.length, "not-ranked"]] : []),
      ...(v.no_population.length ? [[t("noPopulation"), v.no_population.length, "no-population"]] : []),
    ];
    $("#v-result").innerHTML = `
      <p class="v-ref"><strong>${esc(ref.measures)}</strong> — ${esc(ref.source)}, ${esc(ref.period)}<br>
        <span class="muted">${notes.map(esc).join(" · ")}</span></p>
      <p class="v-counts">${counts.map(([label, n, key]) => `${esc(label)} <strong data-key="${key}">${esc(n)}</strong>`).join(" · ")}</p>
      ${Object.keys(v.countries).sort(countryOrder).map((iso) => validationCountry(iso, v.countries[iso], v)).join("")}
      ${unmatchedList(v.unmatched)}
      <p class="muted">${esc(t("validationNote"))}</p>`;
  }
  function validationCountry(iso, c, v) {
    const u = c.units;
    const rows = [
      ...(u ? [["spearman-units", t("spearmanUnits"), spearmanText(u.spearman)]] : []),
      ["spearman-departments", t("spearmanDeps"), spearmanText(c.departments.spearman)],
      ...(u ? [["top-k", `${t("topK")} (k = ${u.top_k.k})`, topKText(u.top_k)], ["tier1", t("tier1Hits"), tier1Text(u.tier1)]] : []),
    ];
    return `<div class="v-country" data-country="${esc(iso)}">
      <h3>${esc(COUNTRY_NAMES[iso] || iso)} · ${esc(t("matchedRows"))} ${esc(c.matched)}</h3>
      <table class="v-figures"><tbody>${rows.map(([key, label, value]) =>
        `<tr data-key="${key}"><th scope="row">${esc(label)}</th><td>${value}</td></tr>`).join("")}</tbody></table>
      ${scatter(c.pairs, v)}
      ${disagreementTable(u ? u.disagreements : c.departments.disagreements, Boolean(u))}
    </div>`;
  }
  // an axis over [lo, hi] with about four round ticks (steps of 1, 2 or 5 × 10^k) that enclose the data
  function niceAxis(lo, hi) {
    if (lo === hi) [lo, hi] = [lo - 1, hi + 1];
    const raw = (hi - lo) / 4;
    const mag = 10 ** Math.floor(Math.log10(raw));
    const step = [1, 2, 5, 10].map((m) => m * mag).find((st) => st >= raw);
    const [a, b] = [Math.floor(lo / step) * step, Math.ceil(hi / step) * step];
    const ticks = [];
    for (let x = a; x <= b + step / 2; x += step) ticks.push(Number(x.toPrecision(12)));
    const margin = (b - a) * 0.03; // keeps points on the edge off the frame
    return { a: a - margin, b: b + margin, ticks };
  }
  // reference value (x) against score (y), one point per matched ranked unit; inline SVG, both axes fitted
  // to the data (a reference often covers only the top of the ranking)
  function scatter(pairs, v) {
    const pts = pairs.filter((p) => p.score !== null && p.value !== null);
    if (!pts.length) return `<p class="muted">${esc(t("noScatter"))}</p>`;
    const [W, H, L, R, T, B] = [360, 230, 40, 12, 8, 38];
    const xa = niceAxis(Math.min(...pts.map((p) => p.value)), Math.max(...pts.map((p) => p.value)));
    const ya = niceAxis(Math.min(...pts.map((p) => p.score)), Math.max(...pts.map((p) => p.score)));
    const sx = (x) => L + ((x - xa.a) / (xa.b - xa.a)) * (W - L - R);
    const sy = (y) => T + (1 - (y - ya.a) / (ya.b - ya.a)) * (H - T - B);
    const xLabel = `${v.reference.measures}${v.options.per_capita ? ` (${t("perCapitaShort")})` : ""}`;
    const label = `${t("scatterLabel")}: ${pts.length} ${t("points")}`;
    return `<figure class="v-scatter"><svg viewBox="0 0 ${W} ${H}" role="img" aria-label="${esc(label)}">
      <rect x="${L}" y="${T}" width="${W - L - R}" height="${H - T - B}" class="frame"/>
      ${ya.ticks.map((y) => `<line class="grid" x1="${L}" x2="${W - R}" y1="${sy(y)}" y2="${sy(y)}"/>
        <text class="tick" x="${L - 4}" y="${sy(y) + 3}" text-anchor="end">${fmt(y)}</text>`).join("")}
      ${xa.ticks.map((x) => `<text class="tick" x="${sx(x)}" y="${H - B + 12}" text-anchor="middle">${fmt(x)}</text>`).join("")}
      <text class="axis" x="${L + (W - L - R) / 2}" y="${H - 6}" text-anchor="middle">${esc(xLabel.slice(0, 70))}</text>
      <text class="axis" transform="translate(11 ${T + (H - T - B) / 2}) rotate(-90)" text-anchor="middle">${esc(t("score"))}</text>
      ${pts.map((p) => `<circle class="pt" data-pcode="${esc(p.pcode)}" cx="${sx(p.value).toFixed(1)}" cy="${sy(p.score).toFixed(1)}" r="3.5"
        fill="${TIER_COLOURS[p.tier] || NOT_RANKED}"><title>${esc(p.name)} (${esc(p.pcode)}): ${fmt(p.value)} · ${esc(t("score"))} ${fmt(p.score, 1)}${
        p.tier ? ` · ${esc(t("tier"))} ${esc(p.tier)}` : ""}</title></circle>`).join("")}
    </svg><figcaption class="muted">${[1, 2, 3].map((k) =>
      `<span class="chip" style="background:${TIER_COLOURS[k]}"></span>${esc(t("tier"))} ${k}`).join(" ")}</figcaption></figure>`;
  }
  function disagreementTable(list, clickable) {
    if (!list || !list.length) return "";
    return `<details class="v-disagreements"><summary>${esc(t("disagreements"))}</summary>
      <table><thead><tr><th scope="col">${esc(t("municipio"))}</th><th scope="col" class="num">${esc(t("referenceRank"))}</th>
        <th scope="col" class="num">${esc(t("profileRank"))}</th><th scope="col" class="num">${esc(t("difference"))}</th></tr></thead><tbody>
      ${list.slice(0, MAX_DISAGREEMENTS).map((d) => `<tr title="${esc(t("value"))} ${fmt(d.value)} · ${esc(t("score"))} ${fmt(d.score, 1)}"><td>${clickable
        ? `<button type="button" class="link" data-pcode="${esc(d.pcode)}">${esc(d.name)}</button>` : esc(d.name)}</td>
        <td class="num">${fmt(d.reference_rank, 1)}</td><td class="num">${fmt(d.profile_rank, 1)}</td>
        <td class="num">${signed(d.rank_difference, 1)}</td></tr>`).join("")}
      </tbody></table></details>`;
  }
  function unmatchedList(list) {
    if (!list.length) return "";
    const suggestion = (s) => (s.department // a municipio: open its panel
      ? `<button type="button" class="link" data-pcode="${esc(s.pcode)}">${esc(s.name)}</button> (${esc(s.pcode)}, ${esc(s.department)})`
      : `${esc(s.name)} (${esc(s.pcode)})`);
    return `<details class="v-unmatched" open><summary>${esc(t("unmatchedRows"))} (${list.length})</summary><ul>
      ${list.slice(0, MAX_UNMATCHED).map((m) => `<li data-row="${esc(m.row)}"><strong>${esc(m.row)}</strong>: ${esc(m.given)} — ${esc(m.reason)}${
        m.suggestions.length ? `<br>${esc(t("didYouMean"))} ${m.suggestions.map(suggestion).join(", ")}?` : ""}</li>`).join("")}
      </ul>${list.length > MAX_UNMATCHED ? `<p class="muted">… ${list.length - MAX_UNMATCHED} ${esc(t("more"))}</p>` : ""}</details>`;
  }
  $("#v-result").addEventListener("click", (e) => {
    const b = e.target.closest("button[data-pcode]");
    if (b) select(b.dataset.pcode, null, true);
  });

  // the whole map for the chosen profile and weights: the default profile straight from the tiles, another
  // bundled profile from GET /v1/priorities, a scenario from POST /v1/scores
  async function applyWeights() {
    updateURL();
    busy(+1);
    try {
      const mine = ++state.weightSeq;
      const scenario = !isDefault();
      let overlay = null;
      if (scenario || state.profile !== PROFILE) {
        const q = new URLSearchParams({ limit: 1000 });
        if (!scenario) q.set("profile", state.profile);
        const body = scenario ? await getJSON(`v1/scores?${q}`, post()) : await getJSON(`v1/priorities?${q}`);
        overlay = buildOverlay(body.items);
      }
      if (mine !== state.weightSeq) return; // the sliders or the profile moved on while this one was computed
      state.scenario = scenario;
      state.overlay = overlay;
      await loadChanges();
      restyle();
      if (state.colour === "change") updateURL(); // now with the baseline's name
      await loadTable();
      if (state.selected) await select(state.selected, state.selectedId);
    } finally {
      busy(-1);
    }
  }
  let pending = 0; // scenarios being computed: the sliders may move again before one returns
  function busy(step) {
    pending += step;
    $("#busy").hidden = pending === 0;
    if (pending) document.body.dataset.busy = "1";
    else delete document.body.dataset.busy;
  }
  function updateURL() {
    const q = filterQuery();
    if (state.lang === "en") q.set("lang", "en");
    if (state.colour !== "score") q.set("color", state.colour);
    if (state.colour === "change" && state.changes) q.set("baseline", state.changes.name);
    if (!isDefault()) for (const k of weightKeys()) q.set(k, state.weights[k]);
    history.replaceState(null, "", `${location.pathname}${q.toString() ? `?${q}` : ""}`);
    $("#share").href = location.href;
  }
  function renderProfile() {
    $("#profile-id").textContent = state.scenario ? "map-scenario" : state.profile;
    $("#profile-hash").textContent = state.hash;
  }

  // ---- legend, language, controls
  function changeLegend() {
    if (!state.changes) return `<p class="muted" id="no-baseline">${esc(state.baselines && !state.baselines.length ? t("noBaseline") : t("computing"))}</p>`;
    const labels = ["< −10", "−10 – −5", "−5 – −1", "−1 – 1", "1 – 5", "5 – 10", "≥ 10"];
    return `<p class="legend-title">${esc(t("changeLegend"))}</p><ul>${CHANGE_COLOURS.map((c, i) =>
      `<li><span class="chip" style="background:${c}"></span>${esc(labels[i])}${i === 3 ? ` (${esc(t("noChange"))})` : ""}</li>`).join("")}
      <li><span class="chip" style="background:${NOT_RANKED}"></span>${esc(t("notRanked"))}</li></ul>`;
  }
  function renderLegend() {
    $("#baseline-wrap").hidden = state.colour !== "change" || !state.baselines || !state.baselines.length;
    if (state.colour === "change") {
      $("#legend").innerHTML = changeLegend();
      return;
    }
    const items = state.colour === "pillar"
      ? PILLARS.map((p) => `<li><span class="chip" style="background:${PILLAR_COLOURS[p]}"></span>${esc(t("pillars")[p])}</li>`).join("")
      : `<li><span class="ramp"></span> 0 – 100 (${esc(t("score"))})</li>`;
    $("#legend").innerHTML = `<ul>${items}<li><span class="chip" style="background:${NOT_RANKED}"></span>${esc(t("notRanked"))}</li></ul>`;
  }
  function applyLanguage() {
    document.documentElement.lang = state.lang;
    document.title = t("title");
    for (const el of document.querySelectorAll("[data-i18n]")) el.textContent = t(el.dataset.i18n);
    $("#lang").textContent = t("switchTo");
    $("#lang").setAttribute("aria-label", t("switchLabel"));
    $("#side").setAttribute("aria-label", t("controls"));
    $("#map").setAttribute("aria-label", t("mapLabel"));
    $("#panel-close").setAttribute("aria-label", t("close"));
    renderSliders();
    renderScope();
    renderFit();
    renderValidation();
    renderLegend();
    renderTable();
    if (state.panelData && !$("#panel").hidden) renderPanel();
  }
  $("#lang").addEventListener("click", () => {
    state.lang = state.lang === "es" ? "en" : "es";
    applyLanguage();
    updateURL();
  });
  for (const input of document.querySelectorAll("input[name=color]")) {
    input.checked = input.value === state.colour;
    input.addEventListener("change", () => {
      state.colour = input.value;
      refreshChanges();
    });
  }
  for (const key of Object.keys(state.filter)) {
    const sel = $(`#f-${key}`);
    sel.value = state.filter[key];
    sel.addEventListener("change", () => {
      state.filter[key] = sel.value;
      restyle();
      updateURL();
      loadTable().catch(showError);
    });
  }

  // ---- change since a baseline: the baselines once, then GET /v1/priorities/changes for the chosen profile
  async function loadChanges() {
    if (state.colour !== "change") return;
    if (!state.baselines) {
      state.baselines = (await getJSON("v1/baselines")).items;
      $("#f-baseline").innerHTML = state.baselines.map((b) =>
        `<option value="${esc(b.name)}">${esc(b.name)} (${esc(b.profile.id)}, ${esc(b.created_at.slice(0, 10))})</option>`).join("");
    }
    const names = state.baselines.map((b) => b.name);
    if (!names.length) {
      state.changes = null;
      return;
    }
    const name = names.includes(state.baseline) ? state.baseline : names[0]; // newest first
    $("#f-baseline").value = name;
    const q = new URLSearchParams({ baseline: name, profile: state.profile, limit: 1000 });
    const body = await getJSON(`v1/priorities/changes?${q}`);
    const byPcode = new Map(body.items.map((i) => [i.pcode, i]));
    const known = body.items.filter((i) => i.change.score !== null);
    const expr = known.length ? ["match", ["get", "pcode"], ...known.flatMap((i) => [i.pcode, i.change.score]), NO_CHANGE] : NO_CHANGE;
    state.changes = { name, byPcode, expr, counts: body.counts };
  }
  // after the colour mode or the baseline changed: the changes (when shown), the map, the URL, the panel
  async function refreshChanges() {
    try {
      await loadChanges();
    } catch (err) {
      showError(err);
    }
    restyle();
    updateURL();
    if (state.panelData && !$("#panel").hidden) renderPanel();
  }
  $("#f-baseline").addEventListener("change", (e) => {
    state.baseline = e.target.value;
    refreshChanges();
  });

  async function init() {
    const [profiles, sources, catalogue] = await Promise.all(
      ["v1/profiles", "v1/sources", "v1/indicators"].map((path) => getJSON(path)));
    state.catalogue = new Map(catalogue.items.map((i) => [i.code, i]));
    state.sources = Object.fromEntries(sources.items.map((s) => [s.id, s]));
    // the default first, the others as the service lists them
    const items = [...profiles.items].sort((a, b) => (b.id === PROFILE) - (a.id === PROFILE));
    state.profiles = new Map(items.map((p) => [p.id, p]));
    renderProfiles();
    useProfile(params.get("profile"), true); // an unknown id falls back to the default
    applyLanguage();
    if (!map.loaded()) await new Promise((resolve) => map.once("load", resolve));
    await applyWeights();
  }
  const ready = init().catch((err) => { showError(err); throw err; });
  window.raices = { map, state, ready }; // for the browser test and for curious planners in the console
})();
