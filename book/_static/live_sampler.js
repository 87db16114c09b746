/* The live sampler: chapter 5's char-rnn, generating text in the reader's browser.
 *
 * No server and no network: the weights come from a script loaded before this one,
 * live_sampler_weights.js, which `python -m charrnn_lib.web` writes (charrnn_lib/web.py
 * documents the format: the vocabulary, the model's config and every weight as base64
 * float32, little-endian).  A page opened from disk (file://) may not fetch() a local file
 * but may run a <script src>, which is why the weights are a script and not a data file.
 *
 * What runs per character is chapter 3's LSTM step and chapter 6's choice rules, in plain
 * JavaScript (a runtime such as onnxruntime-web would add about 15 MB of WebAssembly for
 * three matrix-vector products).  With row vectors and Keras's weights (kernel = U^T, (D, 4H);
 * recurrent_kernel = W^T, (H, 4H); bias b, (4H)), one layer's step is
 *
 *     a = x U^T + h_{t-1} W^T + b              four blocks of H columns in Keras's gate order
 *                                              i, f, c, o (Keras's "c" block is the candidate g)
 *     i = sigmoid(a_i)   f = sigmoid(a_f)   g = tanh(a_g)   o = sigmoid(a_o)
 *     s_t = f * s_{t-1} + i * g                (s: the cell state, Keras's "c")
 *     h_t = o * tanh(s_t)
 *
 * fed by the embedding row of the current character and followed by the logits layer,
 * logits = h_t V^T + c.  The weights are stored as float32 (Float32Array) and the
 * arithmetic is JavaScript's, float64: the logits differ from the library's float32 ones
 * by rounding only, so argmax gives the library's text unless two logits nearly tie.
 *
 * The three modes are the deck's (charrnn_lib/sample.py): "argmax" takes the likeliest
 * character; "sample" inverts the cumulative distribution of softmax(logits / T_s) at a
 * uniform number u in (0, 1] (the first k with F_k >= u F_{K-1}); "space" samples only
 * right after a space and takes the argmax elsewhere.  One uniform number is drawn per
 * generated character, used or not, as the library does.  They come from mulberry32 (a
 * 32-bit generator, below), seeded by the seed box: a seed always gives the same text here,
 * but not the text the library gives for that seed (charrnn_lib.sample.uniforms draws its
 * numbers from another generator).
 *
 * Everything the tests need is on globalThis.CharRNNLive.
 */
(function () {
  "use strict";

  var FORMAT = "charrnn-live-sampler-weights";
  var VERSION = 1;
  var MODES = ["argmax", "sample", "space"];
  var MIN_TEMPERATURE = 1e-30;  // as charrnn_lib.config.MIN_TEMPERATURE
  var MAX_LENGTH = 20000;
  var MAX_SEED = 4294967295;    // 2^32 - 1: mulberry32's state is 32 bits
  var SLICE_MS = 40;            // generate this long, then let the browser draw

  function SamplerInputError(message) {  // bad input from the reader: shown in the page
    this.name = "SamplerInputError";
    this.message = message;
  }
  SamplerInputError.prototype = Object.create(Error.prototype);

  // ------------------------------------------------------------------ the weights

  function base64Bytes(text) {
    var binary = atob(text);
    var bytes = new Uint8Array(binary.length);
    for (var i = 0; i < binary.length; i++) bytes[i] = binary.charCodeAt(i);
    return bytes;
  }

  /* The script's object -> a model: typed arrays and sizes.  Throws Error with what to do. */
  function decodeWeights(doc) {
    var rebuild = " Rebuild it with `python -m charrnn_lib.web` (`make book` does).";
    if (!doc || doc.format !== FORMAT) throw new Error("live_sampler_weights.js is not a live-sampler weights script." + rebuild);
    if (doc.version !== VERSION) {
      throw new Error("live_sampler_weights.js has format version " + doc.version + "; this page reads version " + VERSION + "." + rebuild);
    }
    var cfg = doc.model;
    if (cfg.cell !== "lstm") throw new Error("the live sampler runs LSTM models only; this one is " + cfg.cell + "." + rebuild);
    var bytes = base64Bytes(doc.data);
    var view = new DataView(bytes.buffer);
    var flat = new Float32Array(bytes.length / 4);
    for (var i = 0; i < flat.length; i++) flat[i] = view.getFloat32(4 * i, true);  // little-endian on any machine
    var tensors = {};
    doc.tensors.forEach(function (t) {
      var size = t.shape.reduce(function (a, b) { return a * b; }, 1);
      if (t.offset + size > flat.length) throw new Error("live_sampler_weights.js is truncated." + rebuild);
      tensors[t.name] = { shape: t.shape, data: flat.subarray(t.offset, t.offset + size) };
    });
    var K = cfg.vocab_size, H = cfg.hidden_size, L = cfg.num_layers, E = cfg.embedding_dim || cfg.hidden_size;
    function get(name, shape) {
      var t = tensors[name];
      if (!t || t.shape.join() !== shape.join()) throw new Error("live_sampler_weights.js lacks " + name + " " + JSON.stringify(shape) + "." + rebuild);
      return t.data;
    }
    var layers = [];
    for (var l = 0; l < L; l++) {
      var D = l === 0 ? E : H;
      var kernel = get("lstm_" + l + "/kernel", [D, 4 * H]), recurrent = get("lstm_" + l + "/recurrent_kernel", [H, 4 * H]);
      layers.push({ inputSize: D, UW: rowsOf([kernel, recurrent], [D, H], 4 * H), bias: Float64Array.from(get("lstm_" + l + "/bias", [4 * H])),
                    input: new Float64Array(D + H) });
    }
    var chars = doc.chars, index = new Map();
    if (chars.length !== K) throw new Error("live_sampler_weights.js: " + chars.length + " characters for a model of " + K + "." + rebuild);
    chars.forEach(function (c, k) { index.set(c, k); });
    return {
      K: K, H: H, E: E, L: L, chars: chars, index: index, source: doc.source || "", weightCount: flat.length,
      embedding: Float64Array.from(get("embedding", [K, E])), layers: layers,
      V: rowsOf([get("logits/kernel", [H, K])], [H], K), outBias: Float64Array.from(get("logits/bias", [K])),
      a: new Float64Array(4 * H), logits: new Float64Array(K),  // scratch buffers of one step
    };
  }

  /* Keras's transposed blocks -> the equations' orientation.  parts: row-major matrices of shapes
     (n_p, m), e.g. U^T (D, 4H) and W^T (H, 4H); returns the row-major (m, sum n_p) matrix [U | W],
     whose row j holds every weight that feeds output j.  Each output is then one dot product with
     [x_t ; h_{t-1}]: in JavaScript about twice as fast as adding up rows of U^T and W^T (one store
     per output instead of one per product).  Still float32, as stored (half the memory of float64,
     so the whole model stays in a core's cache); the products and sums are float64. */
  function rowsOf(parts, sizes, m) {
    var n = sizes.reduce(function (a, b) { return a + b; }, 0), out = new Float32Array(m * n), column = 0;
    parts.forEach(function (part, p) {
      for (var r = 0; r < sizes[p]; r++) for (var j = 0; j < m; j++) out[j * n + column + r] = part[r * m + j];
      column += sizes[p];
    });
    return out;
  }

  // ------------------------------------------------------------------ one step of the network

  function zeroState(model) {
    var h = [], s = [];
    for (var l = 0; l < model.L; l++) { h.push(new Float64Array(model.H)); s.push(new Float64Array(model.H)); }
    return { h: h, s: s };
  }

  function sigmoid(a) { return 1 / (1 + Math.exp(-a)); }

  /* out[j] = bias[j] + M[j, :] . v for a row-major matrix M (m, n): four running sums per row
     (independent additions the processor can overlap), then their total. */
  function matVec(out, M, v, bias, m, n) {
    for (var j = 0; j < m; j++) {
      var base = j * n, s0 = 0, s1 = 0, s2 = 0, s3 = 0, r = 0;
      for (; r + 3 < n; r += 4) {
        s0 += M[base + r] * v[r]; s1 += M[base + r + 1] * v[r + 1];
        s2 += M[base + r + 2] * v[r + 2]; s3 += M[base + r + 3] * v[r + 3];
      }
      for (; r < n; r++) s0 += M[base + r] * v[r];
      out[j] = bias[j] + ((s0 + s1) + (s2 + s3));
    }
  }

  /* Feed character id `id`: updates `state` in place, returns the K logits of the next character
     (model.logits, overwritten by the next call). */
  function step(model, state, id) {
    var H = model.H, a = model.a;
    var x = model.embedding.subarray(id * model.E, (id + 1) * model.E);  // (E,): row x_t of the embedding
    for (var l = 0; l < model.L; l++) {
      var layer = model.layers[l], h = state.h[l], s = state.s[l], D = layer.inputSize;
      layer.input.set(x, 0);                                           // [x_t ; h_{t-1}]  (D + H,)
      layer.input.set(h, D);
      matVec(a, layer.UW, layer.input, layer.bias, 4 * H, D + H);      // a = U x_t + W h_{t-1} + b  (4H,)
      for (var j = 0; j < H; j++) {                                    // blocks i, f, g, o
        var i = sigmoid(a[j]), f = sigmoid(a[H + j]), g = Math.tanh(a[2 * H + j]), o = sigmoid(a[3 * H + j]);
        s[j] = f * s[j] + i * g;
        h[j] = o * Math.tanh(s[j]);
      }
      x = h;  // (H,): the next layer's input
    }
    matVec(model.logits, model.V, x, model.outBias, model.K, H);       // V h_t + c  (K,)
    return model.logits;
  }

  // ------------------------------------------------------------------ choosing the next character

  function argmax(v) {  // the first largest entry, as np.argmax
    var best = 0;
    for (var k = 1; k < v.length; k++) if (v[k] > v[best]) best = k;
    return best;
  }

  function softmax(logits, temperature) {  // softmax(logits / T_s), shifted by the largest logit
    var K = logits.length, p = new Float64Array(K), top = -Infinity, total = 0, k;
    for (k = 0; k < K; k++) top = Math.max(top, logits[k] / temperature);
    for (k = 0; k < K; k++) { p[k] = Math.exp(logits[k] / temperature - top); total += p[k]; }
    for (k = 0; k < K; k++) p[k] /= total;
    return p;
  }

  /* The deck's weighted_pick: the first k whose running sum F_k reaches u * F_{K-1}. */
  function weightedPick(p, u) {
    var K = p.length, running = new Float64Array(K), total = 0, k;
    for (k = 0; k < K; k++) { total += p[k]; running[k] = total; }
    var target = u * running[K - 1];
    for (k = 0; k < K; k++) if (running[k] >= target) return k;
    return K - 1;
  }

  /* mulberry32 (Tommy Ettinger, public domain): a 32-bit state advanced by a constant and
     mixed by multiply-xorshift rounds; fast, passes the usual statistical tests for this use,
     and only 32 bits of seed.  Returns a function giving uint32 values. */
  function mulberry32(seed) {
    var a = seed >>> 0;
    return function () {
      a = (a + 0x6D2B79F5) >>> 0;
      var t = a;
      t = Math.imul(t ^ (t >>> 15), t | 1);
      t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
      return (t ^ (t >>> 14)) >>> 0;
    };
  }

  function uniform(next) { return (next() + 1) / 4294967296; }  // in (0, 1], as the library's u

  // ------------------------------------------------------------------ a generation

  function quoted(chars) { return chars.map(function (c) { return JSON.stringify(c); }).join(", "); }

  /* Check the reader's options against the model; throws SamplerInputError with what to do. */
  function checkOptions(model, o) {
    var prime = String(o.prime === undefined ? "" : o.prime);
    if (prime.length === 0) throw new SamplerInputError("The prime is empty: type at least one character for the network to start from (the deck used a single space).");
    var points = Array.from(prime);  // code points, not UTF-16 halves
    var unknown = Array.from(new Set(points.filter(function (c) { return !model.index.has(c); }))).sort();
    if (unknown.length) {
      var hint = "remove them or use characters of the training text (the list below the Generate button).";
      if (Array.from(prime.normalize("NFC")).every(function (c) { return model.index.has(c); })) {
        hint = "the training text is NFC-normalised and so must the prime be: retype them as single characters.";
      }
      throw new SamplerInputError("The prime has " + unknown.length + " character(s) that the model never saw: " + quoted(unknown) + "; " + hint);
    }
    if (MODES.indexOf(o.mode) < 0) throw new SamplerInputError("The mode must be one of " + MODES.join(", ") + ", not " + JSON.stringify(o.mode) + ".");
    var temperature = Number(o.temperature);
    if (!(isFinite(temperature) && temperature >= MIN_TEMPERATURE)) throw new SamplerInputError("The temperature must be a finite number of at least 1e-30 (argmax is the limit of a small temperature).");
    var length = Number(o.length);
    if (!(Number.isInteger(length) && length >= 1 && length <= MAX_LENGTH)) throw new SamplerInputError("The length must be a whole number from 1 to " + MAX_LENGTH + ".");
    var seed = Number(o.seed);
    if (o.seed === "" || !(Number.isInteger(seed) && seed >= 0 && seed <= MAX_SEED)) throw new SamplerInputError("The seed must be a whole number from 0 to " + MAX_SEED + ".");
    if (o.mode === "space" && !model.index.has(" ")) throw new SamplerInputError("Mode 'space' needs a space in the vocabulary; use 'sample' or 'argmax'.");
    return { prime: prime, ids: points.map(function (c) { return model.index.get(c); }), mode: o.mode,
             temperature: temperature, length: length, seed: seed };
  }

  /* A generation in progress: the prime is fed at once, then take(n) writes n more characters. */
  function Generator(model, options) {
    var o = checkOptions(model, options);
    this.model = model;
    this.options = o;
    this.state = zeroState(model);
    for (var t = 0; t < o.ids.length - 1; t++) step(model, this.state, o.ids[t]);  // warm up on the prime
    this.previous = o.ids[o.ids.length - 1];  // the input of the next step
    this.next = mulberry32(o.seed);
    this.remaining = o.length;
    this.space = model.index.has(" ") ? model.index.get(" ") : -1;
  }

  Generator.prototype.take = function (n) {
    var model = this.model, o = this.options, out = [];
    n = Math.min(n, this.remaining);
    for (var t = 0; t < n; t++) {
      var logits = step(model, this.state, this.previous);
      var u = uniform(this.next);  // drawn for every character, used or not
      var random = o.mode === "sample" || (o.mode === "space" && this.previous === this.space);
      var k = random ? weightedPick(softmax(logits, o.temperature), u) : argmax(logits);
      out.push(model.chars[k]);
      this.previous = k;
    }
    this.remaining -= n;
    return out.join("");
  };

  /* The whole text at once: the prime followed by `length` characters (as the library's generate). */
  function generate(model, options) {
    var g = new Generator(model, options);
    return g.options.prime + g.take(g.options.length);
  }

  /* The logits after each character of `text`, from the zero state: an array of arrays (tests). */
  function logitsAlong(model, text) {
    var state = zeroState(model), rows = [];
    Array.from(text).forEach(function (c) {
      if (!model.index.has(c)) throw new SamplerInputError("unknown character " + JSON.stringify(c));
      rows.push(Array.from(step(model, state, model.index.get(c))));
    });
    return rows;
  }

  // ------------------------------------------------------------------ the page

  var STYLE = [
    ".live-sampler .ls-form { display: grid; grid-template-columns: max-content 1fr; gap: 0.5em 1em; align-items: center; margin: 1em 0; }",
    ".live-sampler select { justify-self: start; }",
    ".live-sampler textarea, .live-sampler input[type=number], .live-sampler select { font: inherit; padding: 0.2em 0.4em; max-width: 100%; }",
    ".live-sampler textarea { font-family: var(--pst-font-family-monospace, monospace); width: 100%; box-sizing: border-box; }",
    ".live-sampler input[type=range] { width: 14em; vertical-align: middle; }",
    ".live-sampler .ls-hint { opacity: 0.75; font-size: 0.9em; }",
    ".live-sampler button { font: inherit; padding: 0.3em 1.4em; cursor: pointer; }",
    ".live-sampler .ls-message { border-left: 4px solid #c0392b; padding: 0.4em 0.8em; background: rgba(192, 57, 43, 0.08); }",
    ".live-sampler .ls-output { white-space: pre-wrap; min-height: 6em; max-height: 36em; overflow-y: auto; }",
    ".live-sampler .ls-output .ls-prime { font-weight: bold; }",
  ].join("\n");

  function element(tag, attributes, children) {
    var e = document.createElement(tag);
    Object.keys(attributes || {}).forEach(function (a) {
      if (a === "text") e.textContent = attributes[a]; else e.setAttribute(a, attributes[a]);
    });
    (children || []).forEach(function (c) { e.appendChild(c); });
    return e;
  }

  function showMessage(container, text) {
    var box = container.querySelector(".ls-message") || container.appendChild(element("p", { "class": "ls-message", role: "alert" }));
    box.textContent = text;
    box.hidden = !text;
  }

  function describe(model) {
    return model.L + " \u00d7 " + model.H + " LSTM, " + model.K + " characters, " + model.weightCount.toLocaleString("en-US") +
      " weights" + (model.source ? ", from the run " + model.source : "");
  }

  function buildPage(container, model) {
    var style = element("style", { text: STYLE });
    var modeSelect = element("select", { id: "ls-mode" }, [
      element("option", { value: "argmax", text: "argmax: always the likeliest character" }),
      element("option", { value: "sample", text: "sample: a weighted random pick" }),
      element("option", { value: "space", text: "space: random after a space, argmax elsewhere" }),
    ]);
    modeSelect.value = "sample";
    var temperature = element("input", { id: "ls-temperature", type: "range", min: "0.1", max: "2", step: "0.05", value: "0.8" });
    var temperatureValue = element("output", { id: "ls-temperature-value", "for": "ls-temperature", text: "0.80" });
    temperature.addEventListener("input", function () { temperatureValue.textContent = Number(temperature.value).toFixed(2); });
    var button = element("button", { id: "ls-generate", type: "submit", text: "Generate" });
    var form = element("form", { "class": "ls-form", novalidate: "" }, [  // our messages, not the browser's
      element("label", { "for": "ls-prime", text: "Prime" }), element("textarea", { id: "ls-prime", rows: "2", spellcheck: "false" }),
      element("label", { "for": "ls-mode", text: "Mode" }), modeSelect,
      element("label", { "for": "ls-temperature", text: "Temperature" }), element("span", {}, [temperature, document.createTextNode(" "), temperatureValue,
        element("span", { "class": "ls-hint", text: "  (sample and space only)" })]),
      element("label", { "for": "ls-seed", text: "Seed" }), element("span", {}, [element("input", { id: "ls-seed", type: "number", min: "0", max: String(MAX_SEED), step: "1", value: "1" }),
        element("span", { "class": "ls-hint", text: "  the same seed, the same text" })]),
      element("label", { "for": "ls-length", text: "Length" }), element("span", {}, [element("input", { id: "ls-length", type: "number", min: "1", max: String(MAX_LENGTH), step: "1", value: "600" }),
        element("span", { "class": "ls-hint", text: "  characters to generate" })]),
      element("span"), element("span", {}, [button]),
    ]);
    form.querySelector("#ls-prime").value = "ROMEO:";
    var vocabulary = element("details", { "class": "ls-vocabulary" }, [
      element("summary", { text: "The " + model.K + " characters the model knows" }),
      element("code", { text: model.chars.map(function (c) { return { "\n": "\\n", " ": "\u2423", "\t": "\\t" }[c] || c; }).join(" ") }),
    ]);
    var message = element("p", { "class": "ls-message", role: "alert" });
    message.hidden = true;
    var about = element("p", { "class": "ls-model", text: "Model: " + describe(model) + "." });
    var status = element("p", { id: "ls-status", "class": "ls-status", "aria-live": "polite" });
    var output = element("pre", { id: "ls-output", "class": "ls-output" });
    container.textContent = "";
    [style, about, form, vocabulary, message, status, output].forEach(function (e) { container.appendChild(e); });

    var run = 0;  // the current generation's number: a newer one (or Stop) ends an older one
    var submits = 0;  // data-submits counts the presses of the button (tests wait for the next one)
    function finish(state, text) {
      container.setAttribute("data-state", state);
      button.textContent = "Generate";
      if (text !== undefined) status.textContent = text;
    }
    form.addEventListener("submit", function (event) {
      event.preventDefault();
      container.setAttribute("data-submits", String(++submits));
      if (container.getAttribute("data-state") === "running") { run++; finish("stopped", status.textContent + " Stopped."); return; }
      var mine = ++run, started = performance.now(), generator;
      showMessage(container, "");
      try {
        generator = new Generator(model, {
          prime: form.querySelector("#ls-prime").value, mode: modeSelect.value, temperature: temperature.value,
          seed: form.querySelector("#ls-seed").value, length: form.querySelector("#ls-length").value,
        });
      } catch (error) {
        if (!(error instanceof SamplerInputError)) throw error;
        showMessage(container, error.message);
        finish("invalid");
        return;
      }
      var o = generator.options, written = [];
      output.textContent = "";
      output.appendChild(element("span", { "class": "ls-prime", text: o.prime }));
      container.setAttribute("data-state", "running");
      button.textContent = "Stop";
      (function slice() {
        if (mine !== run) return;
        var until = performance.now() + SLICE_MS, piece = "";
        while (generator.remaining > 0 && performance.now() < until) piece += generator.take(32);
        written.push(piece);
        output.appendChild(document.createTextNode(piece));
        var done = o.length - generator.remaining, seconds = (performance.now() - started) / 1000;
        var rate = Math.round(done / seconds).toLocaleString("en-US") + " characters per second";
        if (generator.remaining > 0) {
          status.textContent = done.toLocaleString("en-US") + " of " + o.length.toLocaleString("en-US") + " characters, " + rate + "\u2026";
          setTimeout(slice, 0);
          return;
        }
        api.lastRun = { text: o.prime + written.join(""), seconds: seconds, charactersPerSecond: done / seconds, options: o };
        finish("done", o.length.toLocaleString("en-US") + " characters in " + seconds.toFixed(2) + " s, " + rate +
          " (" + o.mode + (o.mode === "argmax" ? "" : ", temperature " + o.temperature.toFixed(2) + ", seed " + o.seed) + ").");
      })();
    });
    container.setAttribute("data-state", "ready");
  }

  function start() {
    var container = document.getElementById("ls-app");  // not "live-sampler": the page's section has that id
    if (!container) return;
    var doc = globalThis.CHARRNN_WEIGHTS;
    if (doc === undefined) {
      container.textContent = "";
      showMessage(container, "The model's weights did not load: live_sampler_weights.js is missing from the book's _static folder. " +
        "Build the book with `make book`, which writes it (python -m charrnn_lib.web).");
      container.setAttribute("data-state", "error");
      return;
    }
    try {
      api.model = decodeWeights(doc);
    } catch (error) {
      container.textContent = "";
      showMessage(container, "The model could not be read: " + error.message);
      container.setAttribute("data-state", "error");
      return;
    }
    buildPage(container, api.model);
  }

  var api = globalThis.CharRNNLive = {
    FORMAT: FORMAT, VERSION: VERSION, MODES: MODES, SamplerInputError: SamplerInputError,
    decodeWeights: decodeWeights, zeroState: zeroState, step: step, softmax: softmax, weightedPick: weightedPick,
    mulberry32: mulberry32, uniform: uniform, checkOptions: checkOptions, Generator: Generator, generate: generate,
    logitsAlong: logitsAlong, model: null, lastRun: null,
  };
  if (typeof document !== "undefined") {
    if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start); else start();
  }
})();
