"""The live sampler: its weights script (charrnn_lib.web) and its page (book/_static/live_sampler.js).

Quick tests pin the format: the script decodes to the model's weights exactly, and a NumPy
reimplementation of what the page computes -- the same equations in float64, read from the
decoded script only -- writes the library's text (``charrnn_lib.sample``) for a small model.

The browser tests (``slow``) build a standalone page from the book's JavaScript and the
weights script of a tiny model trained a few steps here, open it in headless Chromium from
``file://`` with every host unreachable, and drive its controls: argmax gives the library's
text, a seed repeats its text (and matches the NumPy reference of the page's generator), and
bad input is answered in the page -- in Korean where the page is marked ``lang="ko"``, as the
Korean edition's is.  They skip where the rendered-book tests skip (no
Chromium), except under CI.
"""
from __future__ import annotations

import pathlib
import shutil

import numpy as np
import pytest

from charrnn_lib import sample, web
from charrnn_lib.config import ModelConfig, TrainConfig, TransformerConfig
from charrnn_lib.data import TextLoader, Vocab
from charrnn_lib.model import build_model, zero_states
from charrnn_lib.repro import seed_everything

from headless_chromium import hangul, start_chromium  # tests/headless_chromium.py

ROOT = pathlib.Path(__file__).resolve().parent.parent
SAMPLER_JS = ROOT / "book" / "_static" / "live_sampler.js"

TEXT = ("ROMEO: the cat sat on the mat. A dog ran to the cat, and the cat ran off!\n"
        "JULIET: what? the dog sat; the mat ran. O cat, O dog.\n") * 3


@pytest.fixture(scope="module")
def vocab():
    return Vocab.from_text(TEXT)


@pytest.fixture(scope="module")
def lstm(vocab):
    """An untrained 2-layer LSTM with E != H (checks the first layer's input size), unit-normal init."""
    seed_everything(0)
    cfg = ModelConfig(len(vocab), hidden_size=16, num_layers=2, embedding_dim=12, init="unit_normal")
    return build_model(cfg), cfg


# ------------------------------------------------------------------ the page's arithmetic, in NumPy


def page_model(arrays: dict, doc: dict) -> dict:
    """The decoded script as the page holds it, in float64."""
    cfg = doc["model"]
    layers = [tuple(arrays[f"lstm_{l}/{n}"].astype(np.float64) for n in ("kernel", "recurrent_kernel", "bias"))
              for l in range(cfg["num_layers"])]
    return dict(chars=doc["chars"], H=cfg["hidden_size"], embedding=arrays["embedding"].astype(np.float64),
                layers=layers, V=arrays["logits/kernel"].astype(np.float64), c=arrays["logits/bias"].astype(np.float64))


def page_step(m: dict, state: list, k: int) -> np.ndarray:
    """One step: embedding row, each LSTM layer (Keras's gate order i, f, g, o), logits.  (K,)"""
    H, x = m["H"], m["embedding"][k]                      # (E,)
    for l, (U_t, W_t, b) in enumerate(m["layers"]):
        h, s = state[l]
        a = x @ U_t + h @ W_t + b                          # (4H,)
        sig = lambda v: 1 / (1 + np.exp(-v))               # noqa: E731
        i, f, g, o = sig(a[:H]), sig(a[H:2 * H]), np.tanh(a[2 * H:3 * H]), sig(a[3 * H:])
        s = f * s + i * g
        h = o * np.tanh(s)
        state[l] = (h, s)
        x = h
    return x @ m["V"] + m["c"]                             # (K,)


def mulberry32(seed: int):
    """The page's generator (book/_static/live_sampler.js), in Python: uint32 values."""
    mask = 0xFFFFFFFF
    a = seed & mask
    while True:
        a = (a + 0x6D2B79F5) & mask
        t = a
        t = ((t ^ (t >> 15)) * (t | 1)) & mask
        t ^= (t + (((t ^ (t >> 7)) * (t | 61)) & mask)) & mask
        yield (t ^ (t >> 14)) & mask


def page_uniforms(seed: int, n: int) -> np.ndarray:
    """The page's uniform numbers in (0, 1] for one generation of ``n`` characters."""
    gen = mulberry32(seed)
    return np.array([(next(gen) + 1) / 2**32 for _ in range(n)])


def page_generate(m: dict, prime: str, length: int, mode: str, temperature: float = 1.0, us=None) -> str:
    """The page's generation loop; ``us`` the uniform numbers (one per generated character)."""
    index = {c: k for k, c in enumerate(m["chars"])}
    state = [(np.zeros(m["H"]), np.zeros(m["H"])) for _ in m["layers"]]
    for c in prime[:-1]:
        page_step(m, state, index[c])
    previous, out = index[prime[-1]], []
    for t in range(length):
        logits = page_step(m, state, previous)
        if mode == "sample" or (mode == "space" and m["chars"][previous] == " "):
            z = logits / temperature
            p = np.exp(z - z.max())
            p /= np.cumsum(p)[-1]                          # the page sums in order
            running = np.cumsum(p)
            k = min(int(np.searchsorted(running, us[t] * running[-1])), len(p) - 1)
        else:
            k = int(np.argmax(logits))
        out.append(m["chars"][k])
        previous = k
    return prime + "".join(out)


def keras_logits(model, cfg, vocab, text) -> np.ndarray:
    """The library's float32 logits after each character of ``text``, from one model call.  (T, K)"""
    import tensorflow as tf

    ids = tf.constant(vocab.encode(text)[None])
    return model([ids, *zero_states(cfg, 1)], training=False)[0].numpy()[0]


# ------------------------------------------------------------------ quick tests


def test_script_round_trips_the_weights_exactly(lstm, vocab):
    model, cfg = lstm
    doc, arrays = web.read_weights_script(web.weights_script(model, vocab, cfg, source="tiny"))
    assert (doc["format"], doc["version"], doc["source"]) == (web.FORMAT, web.VERSION, "tiny")
    assert doc["chars"] == list(vocab.chars) and doc["model"] == cfg.to_dict()
    assert doc["gate_order"] == ["i", "f", "g", "o"] and doc["dtype"] == "<f4"
    # Keras's own list of weights, independent of the attribute names web.py reads:
    expected = [model.get_layer("embedding").get_weights()[0]]
    for l in range(cfg.num_layers):
        expected += model.get_layer(f"lstm_{l}").get_weights()  # kernel, recurrent_kernel, bias
    expected += model.get_layer("logits").get_weights()
    assert list(arrays) == [t["name"] for t in doc["tensors"]]
    assert len(arrays) == len(expected) == 3 + 3 * cfg.num_layers
    for (name, got), want in zip(arrays.items(), expected):
        assert got.dtype == np.float32 and got.shape == want.shape, name
        assert np.array_equal(got, want), name                       # bit for bit
    assert arrays["lstm_0/kernel"].shape == (12, 64) and arrays["lstm_1/kernel"].shape == (16, 64)
    assert sum(a.size for a in arrays.values()) == model.count_params()


def test_script_is_ascii_and_defines_one_global(lstm):
    model, cfg = lstm
    vocab = Vocab(tuple("가나다 \n") + tuple(chr(ord("a") + k) for k in range(cfg.vocab_size - 5)))
    text = web.weights_script(model, vocab, cfg)
    assert text.isascii() and text.count("globalThis.CHARRNN_WEIGHTS = ") == 1 and text.endswith("};\n")
    assert web.read_weights_script(text)[0]["chars"][:3] == ["가", "나", "다"]


def test_the_pages_equations_give_the_librarys_argmax_text(lstm, vocab):
    model, cfg = lstm
    doc, arrays = web.read_weights_script(web.weights_script(model, vocab, cfg))
    m = page_model(arrays, doc)
    sampler = sample.Sampler(model, vocab, cfg)
    for prime in ("ROMEO:", "the c", "O"):
        text = sampler.generate(80, prime=prime, mode="argmax")
        assert page_generate(m, prime, 80, "argmax") == text, prime
        # and the logits themselves agree to float32 rounding (measured: below 2e-6 here)
        state = [(np.zeros(m["H"]), np.zeros(m["H"])) for _ in m["layers"]]
        ours = np.array([page_step(m, state, vocab.index[c]) for c in text])
        assert np.max(np.abs(ours - keras_logits(model, cfg, vocab, text))) < 1e-4


@pytest.mark.parametrize("mode", ["sample", "space"])
def test_the_pages_choice_rules_are_the_librarys(lstm, vocab, mode):
    """With the library's uniform numbers, the page's rules write the library's text."""
    model, cfg = lstm
    doc, arrays = web.read_weights_script(web.weights_script(model, vocab, cfg))
    us = sample.uniforms(4, 150, 1)[0]
    text = sample.Sampler(model, vocab, cfg).generate(150, prime="the ", mode=mode, temperature=0.9, seed=4)
    assert page_generate(page_model(arrays, doc), "the ", 150, mode, 0.9, us) == text


def test_other_models_are_refused_with_a_reason(vocab):
    seed_everything(0)
    gru = ModelConfig(len(vocab), hidden_size=8, num_layers=1, cell="gru")
    with pytest.raises(web.WebExportError, match="LSTM models only.*'gru'"):
        web.weights_script(build_model(gru), vocab, gru)
    from charrnn_lib.transformer import build_transformer

    tf_cfg = TransformerConfig(len(vocab), d_model=8, num_layers=1, num_heads=2, context=8)
    with pytest.raises(web.WebExportError, match="TransformerConfig"):
        web.weights_script(build_transformer(tf_cfg), vocab, tf_cfg)


def test_reader_refuses_what_is_not_a_weights_script(lstm, vocab):
    model, cfg = lstm
    with pytest.raises(web.WebExportError, match="not a live-sampler weights script"):
        web.read_weights_script("var x = 1;\n")
    text = web.weights_script(model, vocab, cfg).replace('"version":1', '"version":2')
    with pytest.raises(web.WebExportError, match="version 2"):
        web.read_weights_script(text)


def test_command_line_usage_errors_exit_2(tmp_path, capsys):
    for argv, message in ([[str(tmp_path / "w.txt")], "must name a .js file"],
                          [[str(tmp_path / "w.js"), "--run", str(tmp_path / "none")], "is not a folder"]):
        with pytest.raises(SystemExit) as exc:
            web.main(argv)
        assert exc.value.code == 2 and message in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []   # nothing written


def test_command_line_folder_without_checkpoint_exits_2(tmp_path, capsys):
    assert web.main([str(tmp_path / "w.js"), "--run", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "error: no checkpoint in" in err and "Traceback" not in err
    assert not (tmp_path / "w.js").exists()


# ------------------------------------------------------------------ the page in a browser


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """A tiny LSTM trained 40 steps, and its weights script written by the command line."""
    folder = tmp_path_factory.mktemp("live")
    corpus = folder / "tiny.txt"
    corpus.write_text(TEXT, encoding="utf-8")
    tc = TrainConfig(batch_size=4, seq_length=10, learning_rate=0.02, num_epochs=50, val_fraction=0.0, fused=False)
    loader = TextLoader(corpus, batch_size=4, seq_length=10, val_fraction=0.0, cache_dir=folder / "cache")
    from charrnn_lib.train import train

    train(loader, ModelConfig(loader.vocab_size, hidden_size=24, init="unit_embedding"), tc,
          out_dir=folder / "run", progress=False, max_batches=40)
    assert web.main([str(folder / "page" / "live_sampler_weights.js"), "--run", str(folder / "run")]) == 0
    from charrnn_lib.checkpoint import load_checkpoint

    model, vocab, cfg = load_checkpoint(folder / "run")
    shutil.copy(SAMPLER_JS, folder / "page" / "live_sampler.js")
    page = """<!doctype html><html{lang}><head><meta charset="utf-8"><title>live sampler</title></head><body>
<div id="ls-app" class="live-sampler"></div>
{weights}<script src="live_sampler.js"></script></body></html>
"""
    weights = '<script src="live_sampler_weights.js"></script>'
    for name, lang in (("", ""), ("_ko", ' lang="ko"')):   # no language (English), and the Korean edition's
        (folder / "page" / f"index{name}.html").write_text(page.format(lang=lang, weights=weights))
        (folder / "page" / f"no_weights{name}.html").write_text(page.format(lang=lang, weights=""))
    doc, arrays = web.read_weights_script((folder / "page" / "live_sampler_weights.js").read_text())
    return dict(folder=folder, model=model, vocab=vocab, cfg=cfg, page=page_model(arrays, doc))


@pytest.fixture(scope="module")
def offline_browser():
    """Headless Chromium with every host unreachable: no name resolves, and the proxy is a dead port."""
    driver = start_chromium(window_size=(1100, 1400), resolver_rules="MAP * ~NOTFOUND",
                            proxy_server="http://127.0.0.1:9")
    yield driver
    driver.quit()


def run_sampler(driver, prime="ROMEO:", mode="argmax", length=200, seed=1, temperature=0.8, timeout=60):
    """Fill in the page's controls, press Generate, wait for the end: (state, output text, message, status)."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    driver.execute_script("""
        const [prime, mode, length, seed, temperature] = arguments;
        document.getElementById('ls-prime').value = prime;
        document.getElementById('ls-mode').value = mode;
        document.getElementById('ls-length').value = length;
        document.getElementById('ls-seed').value = seed;
        document.getElementById('ls-temperature').value = temperature;
    """, prime, mode, str(length), str(seed), str(temperature))
    box = driver.find_element(By.ID, "ls-app")
    submits = int(box.get_attribute("data-submits") or 0)
    driver.find_element(By.ID, "ls-generate").click()
    WebDriverWait(driver, timeout).until(lambda d: int(box.get_attribute("data-submits") or 0) > submits
                                         and box.get_attribute("data-state") in ("done", "invalid", "error"))
    return driver.execute_script("""
        const box = document.getElementById('ls-app'), message = box.querySelector('.ls-message');
        return [box.getAttribute('data-state'), document.getElementById('ls-output').textContent,
                message && !message.hidden ? message.textContent : '',
                document.getElementById('ls-status').textContent];
    """)


def open_page(driver, path: pathlib.Path):
    from selenium.webdriver.support.ui import WebDriverWait

    driver.get(path.as_uri())
    WebDriverWait(driver, 30).until(lambda d: d.execute_script(
        "const b = document.getElementById('ls-app'); return b && b.getAttribute('data-state');"))


def requested_elsewhere(driver) -> list:
    return driver.execute_script("return performance.getEntriesByType('resource').map(r => r.name)"
                                 ".concat([location.href]).filter(n => !n.startsWith('file://'))")


@pytest.mark.slow
def test_page_argmax_writes_the_librarys_text(offline_browser, tiny_run):
    open_page(offline_browser, tiny_run["folder"] / "page" / "index.html")
    sampler = sample.Sampler(tiny_run["model"], tiny_run["vocab"], tiny_run["cfg"])
    for prime, length in (("ROMEO:", 300), ("the cat", 120), ("O", 50)):
        state, text, message, status = run_sampler(offline_browser, prime, "argmax", length)
        assert (state, message) == ("done", "")
        assert text == sampler.generate(length, prime=prime, mode="argmax"), prime
        assert "characters per second" in status
    assert requested_elsewhere(offline_browser) == []


@pytest.mark.slow
def test_page_seed_repeats_its_text(offline_browser, tiny_run):
    open_page(offline_browser, tiny_run["folder"] / "page" / "index.html")
    texts = {seed: run_sampler(offline_browser, "the ", "sample", 300, seed, 1.0)[1] for seed in (7, 8)}
    assert run_sampler(offline_browser, "the ", "sample", 300, 7, 1.0)[1] == texts[7]   # same seed, same text
    assert texts[7] != texts[8]                                                          # another seed, another
    # and it is the page's generator and weighted pick, as the NumPy reference computes them
    for seed in (7, 8):
        assert texts[seed] == page_generate(tiny_run["page"], "the ", 300, "sample", 1.0, page_uniforms(seed, 300))
    space = run_sampler(offline_browser, "the ", "space", 300, 3, 0.7)[1]
    assert space == page_generate(tiny_run["page"], "the ", 300, "space", 0.7, page_uniforms(3, 300))


@pytest.mark.slow
def test_page_explains_bad_input(offline_browser, tiny_run):
    open_page(offline_browser, tiny_run["folder"] / "page" / "index.html")
    state, text, message, _ = run_sampler(offline_browser, prime="ROMEO: §!", mode="argmax")
    assert state == "invalid" and text == ""
    assert "never saw" in message and '"§"' in message
    state, text, message, _ = run_sampler(offline_browser, prime="", mode="sample")
    assert state == "invalid" and "prime is empty" in message
    state, _, message, _ = run_sampler(offline_browser, length=0)
    assert state == "invalid" and "length must be a whole number" in message
    state, _, message, _ = run_sampler(offline_browser, seed=-1)
    assert state == "invalid" and "seed must be a whole number" in message
    state, text, message, _ = run_sampler(offline_browser, prime="the", length=10)   # it recovers
    assert (state, message) == ("done", "") and len(text) == 13
    state, text, message, status = run_sampler(offline_browser, prime="")   # no stale text under the message
    assert state == "invalid" and "prime is empty" in message and (text, status) == ("", "")


@pytest.mark.slow
def test_page_without_weights_says_what_to_do(offline_browser, tiny_run):
    open_page(offline_browser, tiny_run["folder"] / "page" / "no_weights.html")
    box = offline_browser.execute_script(
        "const b = document.getElementById('ls-app'); return [b.getAttribute('data-state'), b.textContent];")
    assert box[0] == "error" and "did not load" in box[1] and "make book" in box[1]


def page_words(driver) -> dict:
    """The texts of the page's controls, and everything it shows, as a reader sees them."""
    return driver.execute_script("""
        const box = document.getElementById('ls-app');
        return {labels: [...box.querySelectorAll('label')].map(e => e.textContent),
                button: document.getElementById('ls-generate').textContent,
                modes: [...box.querySelectorAll('#ls-mode option')].map(e => e.textContent),
                summary: box.querySelector('summary').textContent, shown: box.innerText};""")


@pytest.mark.slow
def test_page_speaks_the_pages_language(offline_browser, tiny_run):
    """A page marked <html lang="ko"> (the Korean edition) gets Korean controls, messages and status
    lines and still writes the library's text; a page in any other language keeps the English ones."""
    expected = sample.Sampler(tiny_run["model"], tiny_run["vocab"], tiny_run["cfg"]).generate(150, prime="ROMEO:", mode="argmax")
    K = len(tiny_run["vocab"])

    open_page(offline_browser, tiny_run["folder"] / "page" / "index.html")
    words = page_words(offline_browser)
    assert words["labels"] == ["Prime", "Mode", "Temperature", "Seed", "Length"] and words["button"] == "Generate"
    assert words["summary"] == f"The {K} characters the model knows" and hangul(words["shown"]) == 0
    state, text, message, status = run_sampler(offline_browser, "ROMEO:", "argmax", 150)
    assert (state, text) == ("done", expected) and status.startswith("150 characters in ") and "(argmax)" in status

    open_page(offline_browser, tiny_run["folder"] / "page" / "index_ko.html")
    words = page_words(offline_browser)
    assert words["labels"] == ["시작 문자열", "모드", "온도", "시드", "길이"] and words["button"] == "생성"
    assert [m.split(":")[0] for m in words["modes"]] == ["argmax", "sample", "space"]      # the book's mode names
    assert all(hangul(m) > 0 for m in words["modes"]) and words["summary"] == f"모델이 아는 문자 {K}개"
    for english in ("Prime", "Generate", "characters", "Model:", "the same seed"):
        assert english not in words["shown"], english
    state, text, message, _ = run_sampler(offline_browser, prime="", mode="sample")
    assert state == "invalid" and text == "" and message.startswith("시작 문자열이 비어 있습니다.") and "입력하세요" in message
    state, _, message, _ = run_sampler(offline_browser, prime="ROMEO: §")
    assert state == "invalid" and '모델이 본 적 없는 문자가 1개 있습니다: "§".' in message
    state, _, message, _ = run_sampler(offline_browser, seed=2**32)
    assert state == "invalid" and message == "시드는 0부터 4,294,967,295까지의 정수여야 합니다."   # numbers as Korean writes them
    state, text, message, status = run_sampler(offline_browser, "ROMEO:", "argmax", 150)
    assert (state, text, message) == ("done", expected, "")                                   # the same text
    assert status.startswith("150 문자 생성: ") and "초당" in status and "(argmax)" in status, status
    assert offline_browser.find_element("id", "ls-generate").text == "생성"
    assert requested_elsewhere(offline_browser) == []

    open_page(offline_browser, tiny_run["folder"] / "page" / "no_weights_ko.html")
    shown = offline_browser.execute_script("return document.getElementById('ls-app').textContent")
    assert "가중치를 불러오지 못했습니다" in shown and "make book" in shown
