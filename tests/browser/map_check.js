// Drive the map page in a real headless Chromium and print what was seen as JSON on stdout.
// Usage: node map_check.js BASE_URL SCREENSHOT_DIR USER_DATA_DIR CHROMIUM REFERENCE_DIR
// REFERENCE_DIR holds reference.csv (a good reference table) and bad.csv (one the service refuses).
// Screenshots: map-overview.png (the bundled profile, the whole region), map-scenario.png (the end of the
// main walk), map-region.png (the regional profile northern-triangle-2021), map-empirical.png (the fitted
// profile empirical-2021 with its fit), map-validation.png (the validation panel with its plot) and map-change.png
// (the change since the newest baseline, El Salvador, with a municipio's panel and its series).
"use strict";
const { chromium } = require("playwright-core");

const fs = require("fs");
const path = require("path");

const [base, shots, userDataDir, executablePath = "/usr/bin/chromium", refDir] = process.argv.slice(2);
const FLAGS = [
  "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
  "--disable-background-networking", "--disable-component-update", "--disable-sync",
  // WebGL without a GPU: software rendering, which recent Chromium only allows when asked for
  "--use-angle=swiftshader", "--enable-unsafe-swiftshader",
];
const TIMEOUT = 60000;

async function openMap(context, path, out) {
  const page = await context.newPage();
  page.setDefaultTimeout(TIMEOUT);
  page.on("console", (m) => { if (m.type() === "error") out.console_errors.push(m.text()); });
  page.on("pageerror", (e) => out.console_errors.push(String(e)));
  page.on("request", (r) => {
    const u = new URL(r.url());
    if (!["data:", "blob:"].includes(u.protocol) && u.origin !== new URL(base).origin) out.external_requests.push(r.url());
  });
  page.on("response", (r) => { if (r.status() >= 400) out.failed_responses.push(`${r.status()} ${r.url()}`); });
  await page.goto(base + path);
  await page.waitForFunction(() => window.raices && window.raices.state.hash);
  await page.evaluate(() => window.raices.ready);
  return page;
}
const firstRows = (page) => page.$$eval("#ranking tbody tr", (rows) => rows.slice(0, 10).map((r) => r.dataset.pcode));
const idle = (page) => page.waitForFunction(() => !document.body.dataset.busy && window.raices.map.loaded());
const REGION = "northern-triangle-2021";
const EMPIRICAL = "empirical-2021";
const squash = (s) => (s === null || s === undefined ? null : s.replace(/\s+/g, " ").trim());

// What the page shows for the chosen profile: selector, table (all rows), sliders, notes, map colours.
const profileView = (page) => page.evaluate(() => {
  const map = window.raices.map;
  const rendered = map.queryRenderedFeatures({ layers: ["fill"] });
  return {
    selected: document.querySelector("#f-profile").value,
    rows: [...document.querySelectorAll("#ranking tbody tr")].map((r) => [r.dataset.pcode, r.cells[0].textContent, r.cells[2].textContent]),
    rank_head: document.querySelector("#rank-head").textContent,
    scope_note: document.querySelector("#scope-note").textContent,
    method: document.querySelector("#method-text").textContent,
    profile_id: document.querySelector("#profile-id").textContent,
    hash: document.querySelector("#profile-hash").textContent,
    sliders: [...document.querySelectorAll("#sliders input[type=range]")].map((i) => [i.dataset.key, i.value]),
    no_data_pillars: [...document.querySelectorAll("#sliders .slider.off")].map((d) => [d.dataset.pillar, d.textContent.trim()]),
    csv_href: document.querySelector("#dl-csv").getAttribute("href"),
    url: location.href,
    // the colour of a rendered municipio comes from the profile's own scores (a match on pcode), not the tiles
    colour_by_pcode: JSON.stringify(map.getPaintProperty("fill", "fill-color")).includes('["get","pcode"]'),
    rendered_features: rendered.length,
  };
});

// What the fit box and the weights section show.
const fitView = (page) => page.evaluate(() => {
  const box = document.querySelector("#fit");
  const text = (el) => (el ? el.textContent.replace(/\s+/g, " ").trim() : null);
  return {
    fit_visible: getComputedStyle(box).display !== "none",
    fit_status: box.dataset.status || null,
    fit_busy: document.querySelector("#fit-body").getAttribute("aria-busy"),
    fit_text: text(box),
    weights_note: text(document.querySelector("#weights-note")),
    reset_hidden: document.querySelector("#reset").hidden,
    fit_countries: [...box.querySelectorAll(".fit-country")].map((c) => ({
      country: c.dataset.country,
      status: c.dataset.status,
      heading: text(c.querySelector("h3")),
      units: text(c.querySelector("[data-key=units]")),
      spearman: text(c.querySelector("[data-key=spearman]")),
      r2: text(c.querySelector("[data-key=r2]")),
      coefficients: [...c.querySelectorAll(".coefs li")].map((li) =>
        [li.dataset.code, li.dataset.pillar, Number(li.dataset.coefficient), text(li.querySelector(".num"))]),
    })),
  };
});

// What the validation panel shows: counts, figures per country, the plot's points, unmatched rows.
const validationView = (page) => page.evaluate(() => {
  const r = document.querySelector("#v-result");
  const text = (el) => (el ? el.textContent.replace(/\s+/g, " ").trim() : null);
  const cell = (c, key) => text(c.querySelector(`tr[data-key="${key}"] td`));
  return {
    ref: text(r.querySelector(".v-ref")),
    counts: Object.fromEntries([...r.querySelectorAll(".v-counts [data-key]")].map((s) => [s.dataset.key, s.textContent])),
    counts_text: text(r.querySelector(".v-counts")),
    countries: [...r.querySelectorAll(".v-country")].map((c) => ({
      country: c.dataset.country,
      spearman_units: cell(c, "spearman-units"),
      spearman_departments: cell(c, "spearman-departments"),
      top_k: cell(c, "top-k"),
      tier1: cell(c, "tier1"),
      svg_label: c.querySelector("svg") ? c.querySelector("svg").getAttribute("aria-label") : null,
      points: [...c.querySelectorAll("svg circle.pt")].map((p) => [p.dataset.pcode, Number(p.getAttribute("cx")), Number(p.getAttribute("cy"))]),
    })),
    unmatched: [...r.querySelectorAll(".v-unmatched li")].map((li) => ({
      row: li.dataset.row, text: text(li), suggestions: [...li.querySelectorAll("button[data-pcode]")].map((b) => b.dataset.pcode),
    })),
    error_hidden: document.querySelector("#v-error").hidden,
    error: text(document.querySelector("#v-error")),
  };
});

(async () => {
  const out = { console_errors: [], external_requests: [], failed_responses: [], timings: {} };
  const t0 = Date.now();
  const context = await chromium.launchPersistentContext(userDataDir, {
    executablePath, headless: true, args: FLAGS, viewport: { width: 1400, height: 900 },
  });
  try {
    const page = await openMap(context, "/map", out);
    out.timings.ready_ms = Date.now() - t0;

    // tiles render
    await page.waitForFunction(() => window.raices.map.queryRenderedFeatures({ layers: ["fill"] }).length > 0);
    await idle(page);
    Object.assign(out, await page.evaluate(() => {
      const map = window.raices.map;
      return {
        source_features: map.querySourceFeatures("priorities", { sourceLayer: "priorities" }).length,
        rendered_features: map.queryRenderedFeatures({ layers: ["fill"] }).length,
        webgl: !!map.painter && !!map.painter.context,
      };
    }));
    out.screenshots = [path.join(shots, "map-overview.png"), path.join(shots, "map-scenario.png")];
    await page.screenshot({ path: out.screenshots[0] });
    out.default_hash = await page.textContent("#profile-hash");
    out.default_rows = await firstRows(page);
    out.row_count = await page.locator("#ranking tbody tr").count();
    out.csv_href = await page.getAttribute("#dl-csv", "href");
    out.gpkg_href = await page.getAttribute("#dl-gpkg", "href");

    // hover and click on GT0101 (Guatemala City)
    const gt0101 = () => page.evaluate(() => {
      const p = window.raices.map.project([-90.51, 14.62]);
      const r = window.raices.map.getCanvas().getBoundingClientRect();
      return { x: r.left + p.x, y: r.top + p.y };
    });
    let at = await gt0101();
    await page.mouse.move(at.x, at.y);
    await page.waitForSelector("#tooltip:not([hidden])");
    out.tooltip = await page.textContent("#tooltip");
    await page.mouse.click(at.x, at.y);
    await page.waitForSelector("#panel:not([hidden])");
    await page.waitForFunction(() => document.querySelector("#panel-body").textContent.includes("GT0101"));
    out.panel = await page.evaluate(() => ({
      title: document.querySelector("#panel-title").textContent,
      text: document.querySelector("#panel-body").innerText,
      bars: document.querySelectorAll("#panel .bar").length,
      indicators: document.querySelectorAll("#panel table.indicators tbody tr.name").length,
    }));

    // the keyboard: a table row's button opens its panel, Escape closes it
    await page.focus("#ranking tbody tr:first-child button");
    await page.keyboard.press("Enter");
    await page.waitForFunction((pcode) => document.querySelector("#panel-body").textContent.includes(pcode), out.default_rows[0]);
    out.keyboard_panel_title = await page.textContent("#panel-title");
    await page.keyboard.press("Escape");
    out.panel_closed_by_escape = await page.locator("#panel").isHidden();

    // weights: pillar IV to 5, out-migration to 0.1
    const t1 = Date.now();
    await page.evaluate(() => {
      for (const [id, v] of [["#w-IV", "5"], ["#w-migration", "0.1"]]) {
        const el = document.querySelector(id);
        el.value = v;
        el.dispatchEvent(new Event("input", { bubbles: true }));
        el.dispatchEvent(new Event("change", { bubbles: true }));
      }
    });
    await page.waitForFunction((h) => document.querySelector("#profile-hash").textContent !== h, out.default_hash);
    await idle(page);
    out.timings.scenario_ms = Date.now() - t1;
    out.scenario_hash = await page.textContent("#profile-hash");
    out.scenario_rows = await firstRows(page);
    out.scenario_url = page.url();
    out.scenario_rendered_features = await page.evaluate(() => window.raices.map.queryRenderedFeatures({ layers: ["fill"] }).length);

    // in a scenario the download link posts the profile and saves what comes back
    const [dl] = await Promise.all([page.waitForEvent("download"), page.click("#dl-csv")]);
    const csv = fs.readFileSync(await dl.path(), "utf8").split("\n");
    out.scenario_csv = { name: dl.suggestedFilename(), header: csv[0].slice(0, 40), first: csv[1].split(",")[0], lines: csv.length };

    // the shared URL restores the scenario in a fresh page
    const shared = await openMap(context, new URL(out.scenario_url).pathname + new URL(out.scenario_url).search, out);
    await idle(shared);
    out.restored = {
      hash: await shared.textContent("#profile-hash"),
      rows: await firstRows(shared),
      iv: await shared.inputValue("#w-IV"),
      migration: await shared.inputValue("#w-migration"),
    };
    await shared.close();

    // a filter applies to the map (filter expression) and to the table
    await page.selectOption("#f-country", "SLV");
    await page.waitForFunction(() => [...document.querySelectorAll("#ranking tbody tr td:nth-child(3)")].every((td) => td.textContent === "SLV"));
    await idle(page);
    out.filtered = await page.evaluate(() => {
      const map = window.raices.map;
      const countries = new Set(map.queryRenderedFeatures({ layers: ["fill"] }).map((f) => f.properties.country));
      return { map_filter: map.getFilter("fill"), rendered_countries: [...countries], rows: document.querySelectorAll("#ranking tbody tr").length };
    });
    out.filtered.csv_href = await page.getAttribute("#dl-csv", "href");
    await page.selectOption("#f-country", "");
    await idle(page);

    // colour by lead pillar, the language toggle, then open GT0101 again for the picture
    await page.check("input[name=color][value=pillar]");
    out.lang_before = await page.textContent("h2[data-i18n=filters]");
    await page.click("#lang");
    out.lang_after = await page.textContent("h2[data-i18n=filters]");
    out.html_lang = await page.getAttribute("html", "lang");
    await page.evaluate(() => window.raices.map.fitBounds([-92.25, 12.98, -83.16, 17.82],
      { animate: false, padding: { top: 16, bottom: 16, left: 16, right: 420 } })); // the keyboard step moved it
    await idle(page);
    at = await gt0101();
    await page.mouse.click(at.x, at.y);
    await page.waitForFunction(() => document.querySelector("#panel-body").textContent.includes("GT0101"));
    out.panel_en = await page.evaluate(() => [...document.querySelectorAll("#panel h3")].map((h) => h.textContent));
    await idle(page);
    await page.screenshot({ path: out.screenshots[1] });

    // the profile selector: the regional profile re-reads table, colours, panel and sliders
    const t2 = Date.now();
    const region = await openMap(context, "/map", out);
    await idle(region);
    out.profile_options = await region.$$eval("#f-profile option", (os) => os.map((o) => [o.value, o.textContent]));
    out.profile_default = await profileView(region);
    const posted = [];
    region.on("request", (r) => { if (r.method() === "POST" && r.url().includes("/v1/scores")) posted.push(r.postDataJSON()); });
    await region.selectOption("#f-profile", REGION);
    await region.waitForFunction((id) => document.querySelector("#profile-id").textContent === id, REGION);
    await idle(region);
    out.timings.region_ms = Date.now() - t2;
    out.region = await profileView(region);
    // the panel of the region's first municipio says its region rank
    await region.click("#ranking tbody tr:first-child button");
    await region.waitForFunction((pcode) => document.querySelector("#panel-body").textContent.includes(pcode), out.region.rows[0][0]);
    out.region_panel = await region.evaluate(() => document.querySelector("#panel-body").innerText);
    await region.keyboard.press("Escape");
    // the country filter still filters, keeping the region ranks
    await region.selectOption("#f-country", "SLV");
    await region.waitForFunction(() => [...document.querySelectorAll("#ranking tbody tr td:nth-child(3)")].every((td) => td.textContent === "SLV"));
    await idle(region);
    out.region_slv = await profileView(region);
    await region.selectOption("#f-country", "");
    await region.evaluate(() => window.raices.map.fitBounds([-92.25, 12.98, -83.16, 17.82], { animate: false, padding: 16 }));
    await idle(region);
    await region.screenshot({ path: path.join(shots, "map-region.png") });
    out.screenshots.push(path.join(shots, "map-region.png"));
    // reloading the page's URL keeps the profile
    await region.reload();
    await region.waitForFunction(() => window.raices && window.raices.state.hash);
    await region.evaluate(() => window.raices.ready);
    await idle(region);
    out.region_reloaded = await profileView(region);
    // a weight scenario posts the regional profile's spec with the new weight
    await region.evaluate(() => {
      const el = document.querySelector("#w-migration");
      el.value = "0.2";
      el.dispatchEvent(new Event("change", { bubbles: true }));
    });
    await region.waitForFunction(() => document.querySelector("#profile-id").textContent === "map-scenario");
    await idle(region);
    out.region_scenario = { ...(await profileView(region)), posted: posted.map((b) =>
      ({ scope: b.scope, pillars: Object.keys(b.pillars), pillar_weights: b.pillar_weights, migration_weight: b.migration_weight })) };
    // and back to the default profile: its own sliders, ranks per country, the tiles' colours
    await region.selectOption("#f-profile", "root-causes-2021");
    await region.waitForFunction(() => document.querySelector("#profile-id").textContent === "root-causes-2021");
    await idle(region);
    out.back_to_default = await profileView(region);
    await region.close();

    // the fitted profile: no sliders but a line saying why, and its fit per country. The fit's request is
    // held back first: the box says it is computing while the map and table of the profile load anyway.
    const t3 = Date.now();
    const fit = await openMap(context, "/map", out);
    await idle(fit);
    let release = null;
    const held = new Promise((resolve) => { release = resolve; });
    let fitRequests = 0;
    await fit.route(`**/v1/profiles/${EMPIRICAL}`, async (route) => { fitRequests += 1; await held; await route.continue(); });
    await fit.selectOption("#f-profile", EMPIRICAL);
    await fit.waitForFunction((id) => document.querySelector("#profile-id").textContent === id, EMPIRICAL);
    await idle(fit);
    out.empirical_loading = { ...(await profileView(fit)), ...(await fitView(fit)), held_requests: fitRequests };
    release();
    await fit.waitForFunction(() => document.querySelector("#fit").dataset.status === "ready");
    out.empirical = { ...(await profileView(fit)), ...(await fitView(fit)) };
    out.timings.empirical_ms = Date.now() - t3;
    await fit.screenshot({ path: path.join(shots, "map-empirical.png") });
    out.screenshots.push(path.join(shots, "map-empirical.png"));
    await fit.click("#lang");
    out.empirical_en = await fitView(fit);
    await fit.click("#lang");
    // and back to the default profile: its sliders, no fit
    await fit.selectOption("#f-profile", "root-causes-2021");
    await fit.waitForFunction(() => document.querySelector("#profile-id").textContent === "root-causes-2021");
    await idle(fit);
    out.empirical_back = { ...(await profileView(fit)), ...(await fitView(fit)) };

    // validation: a reference table equal to the default profile's scores, uploaded as a form
    const validationPosts = [];
    fit.on("request", (r) => {
      if (r.method() !== "POST" || !r.url().includes("/v1/validation")) return;
      const body = (r.postDataBuffer() || Buffer.alloc(0)).toString("utf8");
      const fields = {};
      for (const m of body.matchAll(/name="([^"]+)"(; filename="([^"]*)")?\r\n(?:Content-Type: [^\r]*\r\n)?\r\n([^\r]*)/g)) {
        fields[m[1]] = m[2] ? `file:${m[3]}` : m[4];
      }
      validationPosts.push({ content_type: r.headers()["content-type"].split(";")[0], fields });
    });
    await fit.click("#validation summary");
    await fit.setInputFiles("#v-file", path.join(refDir, "reference.csv"));
    await fit.fill("#v-measures", "score of the default profile");
    await fit.fill("#v-source", "Raíces test");
    await fit.fill("#v-period", "2021");
    await fit.click("#v-submit");
    await fit.waitForSelector("#v-result .v-country");
    out.validation = { ...(await validationView(fit)), posted: validationPosts.slice() };
    await fit.evaluate(() => document.querySelector("#validation").scrollIntoView());
    await fit.screenshot({ path: path.join(shots, "map-validation.png") });
    out.screenshots.push(path.join(shots, "map-validation.png"));
    await fit.click("#lang");
    out.validation_en = await validationView(fit);
    await fit.click("#lang");
    // a suggestion for an unmatched row opens that municipio's panel
    await fit.click(".v-unmatched li button[data-pcode]");
    await fit.waitForSelector("#panel:not([hidden])");
    await fit.waitForFunction(() => document.querySelector("#panel-body").textContent.includes("GT0101"));
    out.suggestion_panel = await fit.textContent("#panel-title");
    await fit.keyboard.press("Escape");
    // a bad file: the service's message, and no figures
    await fit.setInputFiles("#v-file", path.join(refDir, "bad.csv"));
    await fit.click("#v-submit");
    await fit.waitForSelector("#v-error:not([hidden])");
    out.validation_bad = { ...(await validationView(fit)), posts: validationPosts.length };
    await fit.close();

    // change since a baseline: the newest baseline (the test made one of the regional profile) against the
    // default profile now, in a diverging palette; the panel shows then → now and the municipio's series
    const change = await openMap(context, "/map?color=change&country=SLV", out);
    await change.waitForFunction(() => window.raices.state.changes);
    await idle(change);
    out.change_mode = await change.evaluate(() => {
      const st = window.raices.state;
      const paint = window.raices.map.getPaintProperty("fill", "fill-color");
      const expr = st.changes.expr; // ["match", ["get", "pcode"], p1, v1, p2, v2, ..., fallback]
      const values = {};
      for (let i = 2; i < expr.length - 1; i += 2) values[expr[i]] = expr[i + 1];
      return {
        checked: document.querySelector("input[name=color]:checked").value,
        baseline: document.querySelector("#f-baseline").value,
        baseline_visible: !document.querySelector("#baseline-wrap").hidden,
        legend: document.querySelector("#legend").textContent.replace(/\s+/g, " ").trim(),
        legend_colours: [...document.querySelectorAll("#legend .chip")].map((c) => c.style.background),
        paint: JSON.stringify(paint),
        values,
        url: location.href,
        rendered_features: window.raices.map.queryRenderedFeatures({ layers: ["fill"] }).length,
      };
    });
    await change.click("#ranking tbody button[data-pcode]");
    await change.waitForSelector("#panel:not([hidden]) .change");
    await change.waitForSelector("#panel figure.series circle");
    out.change_panel = await change.evaluate(() => ({
      pcode: document.querySelector("#ranking tbody tr.selected").dataset.pcode,
      baseline: document.querySelector("#panel .change").dataset.baseline,
      rows: [...document.querySelectorAll("#panel .change tbody tr")].map((r) => [...r.cells].map((c) => c.textContent.trim())),
      series_indicator: document.querySelector("#panel figure.series").dataset.indicator,
      series_points: [...document.querySelectorAll("#panel figure.series circle")].map((c) => [c.dataset.period, c.classList.contains("partial")]),
      series_label: document.querySelector("#panel figure.series svg").getAttribute("aria-label"),
    }));
    await change.screenshot({ path: path.join(shots, "map-change.png") });
    out.screenshots.push(path.join(shots, "map-change.png"));
    await change.close();
    out.timings.total_ms = Date.now() - t0;
  } catch (err) {
    out.error = String(err && err.stack ? err.stack : err);
  } finally {
    await context.close();
  }
  process.stdout.write(JSON.stringify(out));
})();
