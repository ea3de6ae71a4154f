/* policylens review desk: the few things the pages do without a reload.
   Document text is untrusted: it only ever reaches the page through textContent. */
"use strict";
(function () {
  const TOKEN_KEY = "policylens-write-token";
  const $ = (selector, root) => (root || document).querySelector(selector);
  const $$ = (selector, root) => Array.from((root || document).querySelectorAll(selector));
  const words = (text) => (text || "").split(" ").filter(Boolean);
  const when = (iso) => (iso ? new Date(iso).toLocaleString() : "");
  const labelText = (labels) => (labels && labels.length ? labels.join(", ") : "none of the domains");

  // -- messages and the API --------------------------------------------------

  function banner(message, kind) {
    const el = $("#banner");
    el.textContent = message;
    el.className = "banner " + (kind || "error");
    el.hidden = false;
    if (kind === "ok") setTimeout(() => { if (el.textContent === message) el.hidden = true; }, 5000);
  }

  function clearBanner() { $("#banner").hidden = true; }

  function token() {
    const input = $("#write-token");
    return input ? input.value.trim() : "";
  }

  async function api(method, url, body) {
    const headers = { Accept: "application/json" };
    if (body !== undefined) headers["Content-Type"] = "application/json";
    if (method !== "GET" && token()) headers["X-Write-Token"] = token();
    let response;
    try {
      response = await fetch(url, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
    } catch (err) {
      throw new Error("the server did not answer (" + err.message + ")");
    }
    let data = null;
    try { data = await response.json(); } catch (err) { data = null; }
    if (!response.ok) {
      const error = new Error((data && data.message) || response.status + " " + response.statusText);
      error.status = response.status;
      throw error;
    }
    return data;
  }

  function element(tag, className, text) {
    const el = document.createElement(tag);
    if (className) el.className = className;
    if (text !== undefined) el.textContent = text;
    return el;
  }

  // -- jobs --------------------------------------------------------------------

  function jobLine(job) {
    const li = element("li", "job " + job.state);
    li.dataset.job = job.id;
    li.appendChild(element("div", "job-title", job.title));
    const phase = job.state === "failed" ? "failed: " + job.error : job.state === "queued" ? "waiting" : job.phase;
    li.appendChild(element("div", "phase", phase + " · " + job.seconds + " s"));
    if (job.state === "running" || job.state === "queued") {
      const bar = element("progress");
      if (job.total) { bar.max = job.total; bar.value = job.done || 0; }
      li.appendChild(bar);
    }
    for (const note of job.notes || []) li.appendChild(element("div", "job-note", note));
    return li;
  }

  function pollJob(id, onUpdate) {
    return new Promise((resolve, reject) => {
      const tick = async () => {
        let job;
        try { job = await api("GET", "/desk/api/jobs/" + encodeURIComponent(id)); }
        catch (err) { reject(err); return; }
        onUpdate(job);
        if (job.state === "done") resolve(job);
        else if (job.state === "failed") reject(new Error(job.error));
        else setTimeout(tick, 1000);
      };
      tick();
    });
  }

  // -- the inbox ---------------------------------------------------------------

  function readAsBase64(file) {
    return new Promise((resolve, reject) => {
      const reader = new FileReader();
      reader.onload = () => resolve(String(reader.result).split(",")[1] || "");
      reader.onerror = () => reject(new Error(file.name + ": could not be read"));
      reader.readAsDataURL(file);
    });
  }

  let watchedJobs = new Set();

  async function refreshJobs() {
    let jobs;
    try { jobs = await api("GET", "/desk/api/jobs"); } catch (err) { return; }
    jobs = jobs.filter((job) => job.kind !== "retrain").slice(0, 6);
    const list = $("#jobs");
    list.replaceChildren(...(jobs.length ? jobs.map(jobLine) : [element("li", "muted", "nothing running")]));
    const active = jobs.filter((job) => job.state === "queued" || job.state === "running");
    const finished = jobs.filter((job) => watchedJobs.has(job.id) && job.state === "done");
    for (const job of jobs.filter((j) => j.state === "failed" && watchedJobs.has(j.id))) {
      banner("Upload failed: " + job.error);
      watchedJobs.delete(job.id);
    }
    if (active.length) {
      active.forEach((job) => watchedJobs.add(job.id));
      setTimeout(refreshJobs, 1000);
    } else if (finished.length) {
      location.reload();  // new documents: show them in the list
    }
  }

  async function upload() {
    const input = $("#files");
    const files = Array.from(input.files || []);
    const text = $("#paste-text").value;
    const maxBytes = Number(input.dataset.maxBytes), maxFiles = Number(input.dataset.maxFiles);
    if (!files.length && !text.trim()) { banner("Nothing to upload: choose files or paste a text."); return; }
    if (files.length > maxFiles) { banner(files.length + " files chosen; at most " + maxFiles + " per upload."); return; }
    const total = files.reduce((sum, file) => sum + file.size, 0);
    if (total > maxBytes) {
      banner("The files add up to " + (total / 1048576).toFixed(1) + " MiB; the limit is " + (maxBytes / 1048576).toFixed(0) + " MiB per upload.");
      return;
    }
    const button = $("#upload");
    button.disabled = true;
    try {
      const body = { files: [], text: text.trim() ? text : null, title: $("#paste-title").value || null };
      for (const file of files) body.files.push({ name: file.name, data: await readAsBase64(file) });
      const job = await api("POST", "/desk/api/upload", body);
      watchedJobs.add(job.id);
      input.value = "";
      $("#paste-text").value = "";
      $("#paste-title").value = "";
      banner("Uploaded; tagging in the background.", "ok");
      refreshJobs();
    } catch (err) {
      banner("Upload refused: " + err.message);
    } finally {
      button.disabled = false;
    }
  }

  // -- paragraphs: chips, undo, state --------------------------------------------

  function stateText(el) {
    const origin = el.dataset.origin;
    const reviews = JSON.parse(el.dataset.reviews || "[]");
    if (origin === "model") return "model prediction";
    if (origin === "seed") return "seed annotation";
    if (origin === "base") return "labelled in the base data";
    if (origin === "store") return "labelled in the label store";
    const last = reviews[reviews.length - 1];
    if (!last) return "reviewed";
    const count = Number(el.dataset.count || reviews.length);
    let text = "reviewed " + when(last.time) + (last.undo_of ? " (undo)" : "");
    if (count > 1) text += " · " + count + " corrections, the last one counts";
    if (last.model_version) text += " · predicted by " + last.model_version;
    return text;
  }

  function render(el) {
    const labels = words(el.dataset.labels), predicted = words(el.dataset.predicted);
    for (const chip of $$(".chip.tag", el)) {
      const on = labels.includes(chip.dataset.label);
      chip.classList.toggle("on", on);
      chip.setAttribute("aria-pressed", on ? "true" : "false");
      chip.classList.toggle("changed", on !== predicted.includes(chip.dataset.label));
    }
    $(".chip.none", el).classList.toggle("on", el.dataset.origin !== "model" && labels.length === 0);
    el.classList.toggle("reviewed", el.dataset.origin === "review");
    $(".state", el).textContent = stateText(el);
    const stack = JSON.parse(el.dataset.undo || "[]");
    $(".undo", el).hidden = stack.length === 0;
  }

  function apply(el, view) {
    el.dataset.labels = view.labels.join(" ");
    el.dataset.version = view.version || "";
    el.dataset.origin = view.origin;
    el.dataset.reviews = JSON.stringify(view.reviews || []);
    el.dataset.count = view.review_count || (view.reviews || []).length;
    render(el);
  }

  async function setLabels(el, labels) {
    el.classList.add("busy");
    try {
      const result = await api("POST", "/desk/api/correct", {
        doc: el.dataset.key, index: Number(el.dataset.index), labels, seen: el.dataset.version || null,
      });
      const stack = JSON.parse(el.dataset.undo || "[]");
      stack.push(result.event.version);
      el.dataset.undo = JSON.stringify(stack);
      apply(el, result.paragraph);
      if (result.overrode) {
        banner("Saved ¶" + el.dataset.index + " as " + labelText(labels) + ". It replaced a correction made at " +
          when(result.overrode.time) + " (" + labelText(result.overrode.labels) +
          ") that this page had not shown yet: both are in the label store, the last one counts.", "warn");
      } else {
        clearBanner();
      }
    } catch (err) {
      banner("Not saved: " + err.message);
    } finally {
      el.classList.remove("busy");
    }
  }

  async function undo(el) {
    const stack = JSON.parse(el.dataset.undo || "[]");
    if (!stack.length) return;
    el.classList.add("busy");
    try {
      const result = await api("POST", "/desk/api/undo", { doc: el.dataset.key, index: Number(el.dataset.index), version: stack[stack.length - 1] });
      stack.pop();
      el.dataset.undo = JSON.stringify(stack);
      apply(el, result.paragraph);
      clearBanner();
    } catch (err) {
      banner("Not undone: " + err.message);
    } finally {
      el.classList.remove("busy");
    }
  }

  function onParagraphClick(event) {
    const el = event.target.closest(".para");
    if (!el) return;
    const chip = event.target.closest(".chip.tag");
    if (chip) {
      const labels = words(el.dataset.labels);
      const label = chip.dataset.label;
      setLabels(el, labels.includes(label) ? labels.filter((l) => l !== label) : labels.concat([label]));
    } else if (event.target.closest(".chip.none")) {
      setLabels(el, []);
    } else if (event.target.closest(".chip.confirm")) {
      setLabels(el, words(el.dataset.labels));
    } else if (event.target.closest(".undo")) {
      undo(el);
    }
  }

  // -- the document page ----------------------------------------------------------

  function filterParagraphs(filter) {
    for (const button of $$(".chip.filter[data-filter]")) button.classList.toggle("on", button.dataset.filter === filter);
    for (const el of $$("#paragraphs .para")) {
      const labels = words(el.dataset.labels);
      let show = true;
      if (filter === ":none") show = labels.length === 0;
      else if (filter === ":low") show = el.classList.contains("low");
      else if (filter === ":reviewed") show = el.dataset.origin === "review";
      else if (filter) show = labels.includes(filter);
      el.hidden = !show;
    }
    const domain = filter && !filter.startsWith(":") ? filter : "";
    for (const link of $$("a.export[data-format]")) {
      const url = new URL(link.href);
      if (domain) url.searchParams.set("domain", domain); else url.searchParams.delete("domain");
      link.href = url.toString();
    }
    const here = new URL(location.href);
    if (domain) here.searchParams.set("domain", domain); else here.searchParams.delete("domain");
    history.replaceState(null, "", here.toString());
  }

  async function showSummary(select) {
    const list = $("#summary-sentences");
    list.replaceChildren(element("li", "muted", "summarising…"));
    const domain = select.value;
    try {
      const url = "/desk/api/docs/" + encodeURIComponent(select.dataset.key) + "/summary" + (domain ? "?domain=" + encodeURIComponent(domain) : "");
      const result = await api("GET", url);
      const items = result.sentences.map((sentence) => {
        const li = element("li");
        if (sentence.index !== null && sentence.index !== undefined) {
          const link = element("a", "pnum", "¶" + sentence.index);
          link.href = "#p-" + sentence.index;
          li.append(link, " ");
        }
        li.appendChild(element("span", "", sentence.text));
        return li;
      });
      list.replaceChildren(...(items.length ? items : [element("li", "muted", result.error || "no sentences for this domain")]));
    } catch (err) {
      list.replaceChildren(element("li", "muted", "no summary: " + err.message));
    }
  }

  async function pollLabels(key) {
    try {
      const states = await api("GET", "/desk/api/docs/" + encodeURIComponent(key) + "/labels");
      for (const [index, view] of Object.entries(states)) {
        const el = $("#p-" + index);
        if (!el || el.classList.contains("busy") || (view.version || "") === (el.dataset.version || "")) continue;
        apply(el, view);
        el.classList.add("elsewhere");
        $(".state", el).textContent += " · changed by another correction";
      }
    } catch (err) { /* the next poll tries again */ }
    setTimeout(() => pollLabels(key), 10000);
  }

  // -- the models page -----------------------------------------------------------

  function showRetrain(job) {
    const box = $("#retrain-job");
    box.hidden = false;
    const steps = job.total ? " · step " + (job.done || 0) + " of " + job.total : "";
    $(".phase", box).textContent = (job.state === "queued" ? "waiting" : job.phase) + steps;
    const bar = $("progress", box);
    if (job.total) { bar.max = job.total; bar.value = job.done || 0; } else { bar.removeAttribute("value"); }
    const seconds = Math.round(job.seconds);
    $(".elapsed", box).textContent = Math.floor(seconds / 60) + " min " + (seconds % 60) + " s";
  }

  async function followRetrain(id) {
    $("#retrain").disabled = true;
    try {
      const job = await pollJob(id, showRetrain);
      location.href = "/models?version=" + encodeURIComponent(job.result.version);
    } catch (err) {
      banner("Retraining failed: " + err.message);
      $("#retrain").disabled = false;
    }
  }

  async function switchModel(url, body) {
    try {
      const result = await api("POST", url, body);
      banner("CURRENT → " + result.current + "; serving " + result.model_version + (result.warning ? ". " + result.warning : ""), result.warning ? "warn" : "ok");
      setTimeout(() => location.reload(), 1200);
    } catch (err) {
      banner("Refused: " + err.message);
    }
  }

  // -- start -----------------------------------------------------------------------

  function start() {
    const tokenInput = $("#write-token");
    if (tokenInput) {
      tokenInput.value = sessionStorage.getItem(TOKEN_KEY) || "";
      tokenInput.addEventListener("input", () => sessionStorage.setItem(TOKEN_KEY, tokenInput.value.trim()));
    }
    $$(".para").forEach(render);
    document.addEventListener("click", onParagraphClick);
    const page = document.body.dataset.page;
    if (page === "inbox") {
      $("#upload").addEventListener("click", upload);
      refreshJobs();
    }
    if (page === "document") {
      for (const button of $$(".chip.filter[data-filter]")) button.addEventListener("click", () => filterParagraphs(button.dataset.filter));
      const initial = new URL(location.href).searchParams.get("domain");
      if (initial) filterParagraphs(initial);
      const select = $("#summary-domain");
      select.addEventListener("change", () => showSummary(select));
      pollLabels($("#paragraphs").dataset.key);
      const retag = $("#retag");
      if (retag) retag.addEventListener("click", async () => {
        retag.disabled = true;
        try {
          const job = await api("POST", "/desk/api/docs/" + encodeURIComponent(retag.dataset.key) + "/retag");
          const done = await pollJob(job.id, (j) => { retag.textContent = j.phase; });
          location.href = "/doc/" + encodeURIComponent(done.result[0]);
        } catch (err) {
          banner("Not tagged again: " + err.message);
          retag.disabled = false;
        }
      });
    }
    if (page === "models") {
      const button = $("#retrain");
      button.addEventListener("click", async () => {
        try {
          const job = await api("POST", "/desk/api/retrain");
          showRetrain(job);
          followRetrain(job.id);
        } catch (err) {
          banner("Retraining refused: " + err.message);
        }
      });
      const running = $("#retrain-job").dataset.job;
      if (running) followRetrain(running);
      for (const promote of $$("button.promote")) promote.addEventListener("click", () => switchModel("/desk/api/models/promote", { version: promote.dataset.version }));
      const rollback = $("#rollback");
      if (rollback) rollback.addEventListener("click", () => switchModel("/desk/api/models/rollback", undefined));
      const adopt = $("#adopt");
      if (adopt) adopt.addEventListener("click", () => switchModel("/desk/api/models/adopt", undefined));
    }
  }

  document.addEventListener("DOMContentLoaded", start);
})();
