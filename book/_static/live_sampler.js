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
 * The page speaks the book's language: every text it writes (labels, button, mode names,
 * status lines, the reader's error messages) comes from one table per language, TEXTS below,
 * chosen by the page's <html lang> -- "ko" on the Korean edition (_build/html/ko), English
 * otherwise -- with numbers in that language's format.  checkOptions and decodeWeights take
 * the language as an argument and answer in English without one.
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

  // ------------------------------------------------------------------ the reader's language

  /* Every text the page writes, one table per language: strings, and functions for the texts
     that insert numbers or characters (numbers in the language's own format, toLocaleString).
     The page takes the table of its <html lang>: "ko" on the Korean edition, English
     otherwise.  checkOptions and decodeWeights take a language code too, English by default. */
  function numbers(locale) { return function (x) { return x.toLocaleString(locale); }; }
  var en = numbers("en-US"), ko = numbers("ko-KR");

  var TEXTS = {
    en: {
      prime: "Prime", mode: "Mode", temperature: "Temperature", seed: "Seed", length: "Length",
      generate: "Generate", stop: "Stop",
      modes: { argmax: "argmax: always the likeliest character", sample: "sample: a weighted random pick",
               space: "space: random after a space, argmax elsewhere" },
      temperatureHint: "  (sample and space only)", seedHint: "  the same seed, the same text", lengthHint: "  characters to generate",
      vocabulary: function (K) { return "The " + en(K) + " characters the model knows"; },
      model: function (m) {
        return "Model: " + m.L + " \u00d7 " + m.H + " LSTM, " + en(m.K) + " characters, " + en(m.weightCount) + " weights" +
          (m.source ? ", from the run " + m.source : "") + ".";
      },
      progress: function (done, total, rate) { return en(done) + " of " + en(total) + " characters, " + en(rate) + " characters per second\u2026"; },
      finished: function (o, seconds, rate) {
        return en(o.length) + " characters in " + seconds.toFixed(2) + " s, " + en(rate) + " characters per second (" + o.mode +
          (o.mode === "argmax" ? "" : ", temperature " + o.temperature.toFixed(2) + ", seed " + o.seed) + ").";
      },
      stopped: "Stopped.",
      emptyPrime: "The prime is empty: type at least one character for the network to start from (the deck used a single space).",
      unknownCharacters: function (count, list, decomposed) {
        return "The prime has " + en(count) + " character(s) that the model never saw: " + list + "; " + (decomposed ?
          "the training text is NFC-normalised and so must the prime be: retype them as single characters." :
          "remove them or use characters of the training text (the list below the Generate button).");
      },
      badMode: function (modes, got) { return "The mode must be one of " + modes.join(", ") + ", not " + JSON.stringify(got) + "."; },
      badTemperature: "The temperature must be a finite number of at least 1e-30 (argmax is the limit of a small temperature).",
      badLength: function (max) { return "The length must be a whole number from 1 to " + en(max) + "."; },
      badSeed: function (max) { return "The seed must be a whole number from 0 to " + en(max) + "."; },
      noSpace: "Mode 'space' needs a space in the vocabulary; use 'sample' or 'argmax'.",
      noWeights: "The model's weights did not load: live_sampler_weights.js is missing from the book's _static folder. " +
        "Build the book with `make book`, which writes it (python -m charrnn_lib.web).",
      unreadable: function (message) { return "The model could not be read: " + message; },
      rebuild: " Rebuild it with `python -m charrnn_lib.web` (`make book` does).",
      notWeights: "live_sampler_weights.js is not a live-sampler weights script.",
      badVersion: function (got, want) { return "live_sampler_weights.js has format version " + got + "; this page reads version " + want + "."; },
      notLstm: function (cell) { return "the live sampler runs LSTM models only; this one is " + cell + "."; },
      truncated: "live_sampler_weights.js is truncated.",
      lacks: function (name, shape) { return "live_sampler_weights.js lacks " + name + " " + shape + "."; },
      characterCount: function (n, K) { return "live_sampler_weights.js: " + n + " characters for a model of " + K + "."; },
    },
    ko: {
      prime: "시작 문자열", mode: "모드", temperature: "온도", seed: "시드", length: "길이",
      generate: "생성", stop: "멈춤",
      modes: { argmax: "argmax: 언제나 확률이 가장 높은 문자", sample: "sample: 확률에 따른 무작위 선택(가중 추출)",
               space: "space: 공백 뒤에서만 무작위, 그 밖에는 argmax" },
      temperatureHint: "  (sample과 space에서만)", seedHint: "  같은 시드, 같은 텍스트", lengthHint: "  생성할 문자 수",
      vocabulary: function (K) { return "모델이 아는 문자 " + ko(K) + "개"; },
      model: function (m) {
        return "모델: " + m.L + " \u00d7 " + m.H + " LSTM, 문자 " + ko(m.K) + "개, 가중치 " + ko(m.weightCount) + "개" +
          (m.source ? ", 출처: 실행 " + m.source : "") + ".";
      },
      progress: function (done, total, rate) { return ko(done) + " / " + ko(total) + " 문자, 초당 " + ko(rate) + " 문자\u2026"; },
      finished: function (o, seconds, rate) {
        return ko(o.length) + " 문자 생성: " + seconds.toFixed(2) + "초, 초당 " + ko(rate) + " 문자 (" + o.mode +
          (o.mode === "argmax" ? "" : ", 온도 " + o.temperature.toFixed(2) + ", 시드 " + o.seed) + ").";
      },
      stopped: "멈췄습니다.",
      emptyPrime: "시작 문자열이 비어 있습니다. 신경망이 이어 쓸 문자를 하나 이상 입력하세요(슬라이드는 공백 한 칸을 썼습니다).",
      unknownCharacters: function (count, list, decomposed) {
        return "시작 문자열에 모델이 본 적 없는 문자가 " + ko(count) + "개 있습니다: " + list + ". " + (decomposed ?
          "학습 텍스트는 NFC로 정규화되어 있으므로 시작 문자열도 그래야 합니다. 이 문자를 한 글자(완성형)로 다시 입력하세요." :
          "이 문자를 지우거나 학습 텍스트에 있는 문자(생성 버튼 아래의 목록)를 쓰세요.");
      },
      badMode: function (modes, got) { return "모드는 " + modes.join(", ") + " 중 하나여야 합니다(입력: " + JSON.stringify(got) + ")."; },
      badTemperature: "온도는 1e-30 이상의 유한한 수여야 합니다(argmax는 온도를 아주 작게 했을 때의 극한입니다).",
      badLength: function (max) { return "길이는 1부터 " + ko(max) + "까지의 정수여야 합니다."; },
      badSeed: function (max) { return "시드는 0부터 " + ko(max) + "까지의 정수여야 합니다."; },
      noSpace: "space 모드에는 어휘에 공백이 있어야 합니다. sample이나 argmax를 쓰세요.",
      noWeights: "모델의 가중치를 불러오지 못했습니다. 책의 _static 폴더에 live_sampler_weights.js가 없습니다. " +
        "이 파일을 쓰는 `make book`(python -m charrnn_lib.web)으로 책을 빌드하세요.",
      unreadable: function (message) { return "모델을 읽을 수 없습니다: " + message; },
      rebuild: " `python -m charrnn_lib.web`으로 다시 만드세요(`make book`이 실행합니다).",
      notWeights: "live_sampler_weights.js는 라이브 샘플러의 가중치 스크립트가 아닙니다.",
      badVersion: function (got, want) { return "live_sampler_weights.js의 형식 버전: " + got + ", 이 페이지가 읽는 버전: " + want + "."; },
      notLstm: function (cell) { return "라이브 샘플러는 LSTM 모델만 실행합니다. 이 모델의 셀: " + cell + "."; },
      truncated: "live_sampler_weights.js가 중간에 잘려 있습니다.",
      lacks: function (name, shape) { return "live_sampler_weights.js에 " + name + " " + shape + " 텐서가 없습니다."; },
      characterCount: function (n, K) { return "live_sampler_weights.js의 문자는 " + n + "개인데 모델의 문자는 " + K + "개입니다."; },
    },
  };

  /* A language code ("ko", "ko-KR", "en", "") -> its table; English for any other. */
  function textsFor(language) {
    var code = String(language || "").toLowerCase().split("-")[0];
    return Object.prototype.hasOwnProperty.call(TEXTS, code) ? TEXTS[code] : TEXTS.en;
  }

  // ------------------------------------------------------------------ the weights

  function base64Bytes(text) {
    var binary = atob(text);
    var bytes = new Uint8Array(binary.length);
    for (var i = 0; i < binary.length; i++) bytes[i] = binary.charCodeAt(i);
    return bytes;
  }

  /* The script's object -> a model: typed arrays and sizes.  Throws Error with what to do, in
     `language` (a code such as "ko"; English by default). */
  function decodeWeights(doc, language) {
    var T = textsFor(language), rebuild = T.rebuild;
    if (!doc || doc.format !== FORMAT) throw new Error(T.notWeights + rebuild);
    if (doc.version !== VERSION) throw new Error(T.badVersion(doc.version, VERSION) + rebuild);
    var cfg = doc.model;
    if (cfg.cell !== "lstm") throw new Error(T.notLstm(cfg.cell) + rebuild);
    var bytes = base64Bytes(doc.data);
    var view = new DataView(bytes.buffer);
    var flat = new Float32Array(bytes.length / 4);
    for (var i = 0; i < flat.length; i++) flat[i] = view.getFloat32(4 * i, true);  // little-endian on any machine
    var tensors = {};
    doc.tensors.forEach(function (t) {
      var size = t.shape.reduce(function (a, b) { return a * b; }, 1);
      if (t.offset + size > flat.length) throw new Error(T.truncated + rebuild);
      tensors[t.name] = { shape: t.shape, data: flat.subarray(t.offset, t.offset + size) };
    });
    var K = cfg.vocab_size, H = cfg.hidden_size, L = cfg.num_layers, E = cfg.embedding_dim || cfg.hidden_size;
    function get(name, shape) {
      var t = tensors[name];
      if (!t || t.shape.join() !== shape.join()) throw new Error(T.lacks(name, JSON.stringify(shape)) + rebuild);
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
    if (chars.length !== K) throw new Error(T.characterCount(chars.length, K) + rebuild);
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

  /* Check the reader's options against the model; throws SamplerInputError with what to do, in
     `language` (a code such as "ko"; English by default). */
  function checkOptions(model, o, language) {
    var T = textsFor(language);
    var prime = String(o.prime === undefined ? "" : o.prime);
    if (prime.length === 0) throw new SamplerInputError(T.emptyPrime);
    var points = Array.from(prime);  // code points, not UTF-16 halves
    var unknown = Array.from(new Set(points.filter(function (c) { return !model.index.has(c); }))).sort();
    if (unknown.length) {
      var decomposed = Array.from(prime.normalize("NFC")).every(function (c) { return model.index.has(c); });
      throw new SamplerInputError(T.unknownCharacters(unknown.length, quoted(unknown), decomposed));
    }
    if (MODES.indexOf(o.mode) < 0) throw new SamplerInputError(T.badMode(MODES, o.mode));
    var temperature = Number(o.temperature);
    if (!(isFinite(temperature) && temperature >= MIN_TEMPERATURE)) throw new SamplerInputError(T.badTemperature);
    var length = Number(o.length);
    if (!(Number.isInteger(length) && length >= 1 && length <= MAX_LENGTH)) throw new SamplerInputError(T.badLength(MAX_LENGTH));
    var seed = Number(o.seed);
    if (o.seed === "" || !(Number.isInteger(seed) && seed >= 0 && seed <= MAX_SEED)) throw new SamplerInputError(T.badSeed(MAX_SEED));
    if (o.mode === "space" && !model.index.has(" ")) throw new SamplerInputError(T.noSpace);
    return { prime: prime, ids: points.map(function (c) { return model.index.get(c); }), mode: o.mode,
             temperature: temperature, length: length, seed: seed };
  }

  /* A generation in progress: the prime is fed at once, then take(n) writes n more characters.
     `language` is checkOptions's, for its messages. */
  function Generator(model, options, language) {
    var o = checkOptions(model, options, language);
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

  /* The sampler's controls in `container`, speaking `language` (the page's, e.g. "ko"). */
  function buildPage(container, model, language) {
    var T = textsFor(language);
    var style = element("style", { text: STYLE });
    var modeSelect = element("select", { id: "ls-mode" }, MODES.map(function (mode) {
      return element("option", { value: mode, text: T.modes[mode] });
    }));
    modeSelect.value = "sample";
    var temperature = element("input", { id: "ls-temperature", type: "range", min: "0.1", max: "2", step: "0.05", value: "0.8" });
    var temperatureValue = element("output", { id: "ls-temperature-value", "for": "ls-temperature", text: "0.80" });
    temperature.addEventListener("input", function () { temperatureValue.textContent = Number(temperature.value).toFixed(2); });
    var button = element("button", { id: "ls-generate", type: "submit", text: T.generate });
    var form = element("form", { "class": "ls-form", novalidate: "" }, [  // our messages, not the browser's
      element("label", { "for": "ls-prime", text: T.prime }), element("textarea", { id: "ls-prime", rows: "2", spellcheck: "false" }),
      element("label", { "for": "ls-mode", text: T.mode }), modeSelect,
      element("label", { "for": "ls-temperature", text: T.temperature }), element("span", {}, [temperature, document.createTextNode(" "), temperatureValue,
        element("span", { "class": "ls-hint", text: T.temperatureHint })]),
      element("label", { "for": "ls-seed", text: T.seed }), element("span", {}, [element("input", { id: "ls-seed", type: "number", min: "0", max: String(MAX_SEED), step: "1", value: "1" }),
        element("span", { "class": "ls-hint", text: T.seedHint })]),
      element("label", { "for": "ls-length", text: T.length }), element("span", {}, [element("input", { id: "ls-length", type: "number", min: "1", max: String(MAX_LENGTH), step: "1", value: "600" }),
        element("span", { "class": "ls-hint", text: T.lengthHint })]),
      element("span"), element("span", {}, [button]),
    ]);
    form.querySelector("#ls-prime").value = "ROMEO:";
    var vocabulary = element("details", { "class": "ls-vocabulary" }, [
      element("summary", { text: T.vocabulary(model.K) }),
      element("code", { text: model.chars.map(function (c) { return { "\n": "\\n", " ": "\u2423", "\t": "\\t" }[c] || c; }).join(" ") }),
    ]);
    var message = element("p", { "class": "ls-message", role: "alert" });
    message.hidden = true;
    var about = element("p", { "class": "ls-model", text: T.model(model) });
    var status = element("p", { id: "ls-status", "class": "ls-status", "aria-live": "polite" });
    var output = element("pre", { id: "ls-output", "class": "ls-output" });
    container.textContent = "";
    [style, about, form, vocabulary, message, status, output].forEach(function (e) { container.appendChild(e); });

    var run = 0;  // the current generation's number: a newer one (or Stop) ends an older one
    var submits = 0;  // data-submits counts the presses of the button (tests wait for the next one)
    function finish(state, text) {
      container.setAttribute("data-state", state);
      button.textContent = T.generate;
      if (text !== undefined) status.textContent = text;
    }
    form.addEventListener("submit", function (event) {
      event.preventDefault();
      container.setAttribute("data-submits", String(++submits));
      if (container.getAttribute("data-state") === "running") { run++; finish("stopped", status.textContent + " " + T.stopped); return; }
      var mine = ++run, started = performance.now(), generator;
      showMessage(container, "");
      try {
        generator = new Generator(model, {
          prime: form.querySelector("#ls-prime").value, mode: modeSelect.value, temperature: temperature.value,
          seed: form.querySelector("#ls-seed").value, length: form.querySelector("#ls-length").value,
        }, language);
      } catch (error) {
        if (!(error instanceof SamplerInputError)) throw error;
        showMessage(container, error.message);
        output.textContent = "";       // the message stands alone: no earlier text or status below it
        finish("invalid", "");
        return;
      }
      var o = generator.options, written = [];
      output.textContent = "";
      output.appendChild(element("span", { "class": "ls-prime", text: o.prime }));
      container.setAttribute("data-state", "running");
      button.textContent = T.stop;
      (function slice() {
        if (mine !== run) return;
        var until = performance.now() + SLICE_MS, piece = "";
        while (generator.remaining > 0 && performance.now() < until) piece += generator.take(32);
        written.push(piece);
        output.appendChild(document.createTextNode(piece));
        var done = o.length - generator.remaining, seconds = (performance.now() - started) / 1000;
        var rate = Math.round(done / seconds);
        if (generator.remaining > 0) {
          status.textContent = T.progress(done, o.length, rate);
          setTimeout(slice, 0);
          return;
        }
        api.lastRun = { text: o.prime + written.join(""), seconds: seconds, charactersPerSecond: done / seconds, options: o };
        finish("done", T.finished(o, seconds, rate));
      })();
    });
    container.setAttribute("data-state", "ready");
  }

  function start() {
    var container = document.getElementById("ls-app");  // not "live-sampler": the page's section has that id
    if (!container) return;
    var language = document.documentElement.lang, T = textsFor(language);  // "ko" on the Korean edition
    var doc = globalThis.CHARRNN_WEIGHTS;
    if (doc === undefined) {
      container.textContent = "";
      showMessage(container, T.noWeights);
      container.setAttribute("data-state", "error");
      return;
    }
    try {
      api.model = decodeWeights(doc, language);
    } catch (error) {
      container.textContent = "";
      showMessage(container, T.unreadable(error.message));
      container.setAttribute("data-state", "error");
      return;
    }
    buildPage(container, api.model, language);
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
