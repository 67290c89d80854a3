"""`orpo judge`: rule judges end to end, bad input, and the human page driven in headless Chromium."""

import json
import shutil
import time
from pathlib import Path

import numpy as np
import pytest

from orpo.cli.main import main

RULES = '''
LOWER_IS_BETTER = ("errors",)
PAIRWISE_METRIC = "errors"

def judge(prompt, completion, reference):
    """errors = words of the reference missing from the completion."""
    words = (reference or "").split()
    missing = sum(w not in completion.split() for w in words)
    return {"errors": missing, "exact": float(completion.strip() == (reference or "").strip())}
'''


def _gen(path, completions, references=None, prompts=None):
    with open(path, "w") as fh:
        for i, text in enumerate(completions):
            line = {
                "id": str(i),
                "sample": 0,
                "prompt": (prompts or {}).get(i, f"prompt {i}"),
                "completion": text,
            }
            if references:
                line["reference"] = references[i]
            fh.write(json.dumps(line) + "\n")
    return str(path)


def test_rules_file_judge_writes_verdicts_summary_and_a_table(tmp_path, capsys):
    """Item by item (errors = reference words missing; fewer wins):
    0: A misses 1, B 0 -> B;  1: A 0, B 2 -> A;  2: both 0 -> tie;  3: A 2, B 1 -> B.
    Win rate of B = (2 + 0.5) / 4 = 62.5%."""
    refs = ["red cat", "blue dog", "sun", "one two"]
    a = _gen(tmp_path / "a.jsonl", ["red", "blue dog", "sun", "three"], refs)
    b = _gen(tmp_path / "b.jsonl", ["red cat", "moon", "sun", "one"], refs)
    rules = tmp_path / "myrules.py"
    rules.write_text(RULES)
    out = tmp_path / "judged"
    capsys.readouterr()
    assert main(["judge", a, b, "--judge", f"rules:{rules}", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    summary = json.loads((out / "summary.json").read_text())
    assert (summary["n"], summary["wins"], summary["ties"], summary["losses"]) == (4, 2, 1, 1)
    assert summary["win_rate"] == pytest.approx(62.5)
    low, high = summary["win_rate_ci"]
    assert 0 <= low <= 62.5 <= high <= 100
    assert summary["judge"] == {
        "kind": "rules",
        "rules": str(rules),
        "metric": "errors",
        "higher_is_better": False,
    }
    # Per-model means: A misses (1 + 0 + 0 + 2) / 4, B (0 + 2 + 0 + 1) / 4 reference words.
    assert summary["per_model"]["A"]["errors"]["mean"] == pytest.approx(0.75)
    assert summary["per_model"]["B"]["errors"]["mean"] == pytest.approx(0.75)
    verdicts = [json.loads(line) for line in (out / "verdicts.jsonl").read_text().splitlines()]
    assert [v["verdict"] for v in verdicts] == ["B", "A", "tie", "B"]
    assert verdicts[0]["raw"] == {"A": {"errors": 1.0, "exact": 0.0}, "B": {"errors": 0.0, "exact": 1.0}}
    assert "62.5" in printed and "errors" in printed


def test_codereview_rules_judge_scores_reviews_against_the_reference(tmp_path):
    ref = "L2 R2 eval on input\nL4 R5 bare except"
    a = _gen(tmp_path / "a.jsonl", ["No violations.", "No violations."], [ref, "No violations."])
    b = _gen(tmp_path / "b.jsonl", ["L2 R2 eval on input", "No violations."], [ref, "No violations."])
    out = tmp_path / "cr"
    assert main(["judge", a, b, "--judge", "rules:codereview", "--out", str(out), "--json"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    # Item 0: A finds nothing (f1 0), B one of two (f1 2/3) -> B. Item 1: both approve a clean snippet -> tie.
    assert (summary["wins"], summary["ties"], summary["losses"]) == (1, 1, 0)
    assert summary["per_model"]["B"]["recall"]["mean"] == pytest.approx((0.5 + 1.0) / 2)


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--judge", "nope"], "unknown kind"),
        (["--judge", "rules"], "give rules:FILE.py"),
        (["--judge", "rules:missing.py"], "no such file"),
        (["--judge", "human"], "--export-html"),
        (["--judge", "openai"], "--base-url"),
    ],
)
def test_bad_judge_options_are_one_line_errors(tmp_path, capsys, extra, message):
    a = _gen(tmp_path / "a.jsonl", ["x"])
    b = _gen(tmp_path / "b.jsonl", ["y"])
    assert main(["judge", a, b, "--out", str(tmp_path / "o"), *extra]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("orpo: error:") and message in err and "\n" not in err


def test_files_from_different_prompts_are_refused(tmp_path, capsys):
    a = _gen(tmp_path / "a.jsonl", ["x"], prompts={0: "one prompt"})
    b = _gen(tmp_path / "b.jsonl", ["y"], prompts={0: "another prompt"})
    assert main(["judge", a, b, "--judge", "rules:codereview", "--out", str(tmp_path / "o")]) == 2
    assert "differs" in capsys.readouterr().err


# ---- the human page in headless Chromium ----------------------------------------------------------

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")


def _browser(download_dir: Path):
    if not (CHROMIUM and CHROMEDRIVER):
        pytest.skip(
            "Debian's chromium and chromium-driver are not installed (apt-get install chromium chromium-driver)"
        )
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed (dev extra)")
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1400,900"):
        options.add_argument(flag)
    options.add_experimental_option(
        "prefs", {"download.default_directory": str(download_dir), "download.prompt_for_download": False}
    )
    # An explicit driver path: Selenium Manager never tries to download one.
    return webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)


def test_human_page_in_headless_chromium(tmp_path, capsys):
    """Six items; the rater prefers B's answer on 0, 1, 2 and 5, A's on 3, and calls 4 a tie, using
    keys and buttons. The page is blinded (sides drawn per item), so the test reads which side shows
    B's text. Export, import: B wins 4, loses 1, ties 1 -> (4 + 0.5) / 6 = 75%."""
    from selenium.webdriver.common.by import By

    a_texts = [f"answer A{i} </script><b>not bold</b>" for i in range(6)]
    b_texts = [f"answer B{i}" for i in range(6)]
    a = _gen(tmp_path / "base.jsonl", a_texts)
    b = _gen(tmp_path / "tuned.jsonl", b_texts)
    out, page = tmp_path / "human", tmp_path / "page.html"
    assert main(["judge", a, b, "--judge", "human", "--export-html", str(page), "--out", str(out)]) == 0
    html = page.read_text()
    assert "base.jsonl" not in html and "tuned.jsonl" not in html  # blinded: no model names
    key = json.loads((out / "human_key.json").read_text())
    assert set(key["left_is"].values()) == {"A", "B"}  # sides really vary (seed 0, six items)

    downloads = tmp_path / "downloads"
    downloads.mkdir()
    driver = _browser(downloads)
    try:
        driver.get(page.as_uri())
        body = driver.find_element(By.TAG_NAME, "body")
        want = {0: "B", 1: "B", 2: "B", 3: "A", 4: "tie", 5: "B"}
        for step in range(6):
            left = driver.find_element(By.ID, "left-text").text
            item = int(left.split()[1][1:])
            assert driver.find_element(By.ID, "prompt").text == f"prompt {item}"
            # Text is shown as text, never as markup.
            assert (
                "</script><b>not bold</b>" in left
                or "</script><b>not bold</b>" in driver.find_element(By.ID, "right-text").text
            )
            left_model = "A" if left.startswith("answer A") else "B"
            if want[item] == "tie":
                choice = "tie"
            else:
                choice = "left" if want[item] == left_model else "right"
            if step % 2:  # keyboard
                body.send_keys({"left": "1", "right": "2", "tie": "t"}[choice])
            else:  # buttons
                driver.find_element(By.ID, f"choose-{choice}").click()
        assert driver.find_element(By.ID, "progress").text == "6 of 6 judged"
        assert "All 6 items judged" in driver.find_element(By.ID, "done").text
        # Choices survive a reload (localStorage). Chromium commits localStorage to its storage backend
        # asynchronously (later on a loaded machine); reload until it has, for up to 20 s.
        for _ in range(20):
            time.sleep(1.0)
            driver.refresh()
            if driver.find_element(By.ID, "progress").text == "6 of 6 judged":
                break
        assert driver.find_element(By.ID, "progress").text == "6 of 6 judged"
        shot = tmp_path / "human_page.png"
        driver.save_screenshot(str(shot))
        print(f"screenshot: {shot}")
        driver.find_element(By.TAG_NAME, "body").send_keys("e")
        exported = None
        for _ in range(100):
            files = [p for p in downloads.glob("choices-*.json")]
            if files:
                exported = files[0]
                break
            time.sleep(0.1)
        text_area = driver.find_element(By.ID, "export-json").get_attribute("value")
    finally:
        driver.quit()
    assert shot.stat().st_size > 10_000
    if exported is None:  # some headless builds block downloads; the page shows the same JSON
        exported = tmp_path / "choices.json"
        exported.write_text(text_area)
    assert json.loads(exported.read_text())["page_id"] == key["page_id"]
    capsys.readouterr()
    assert main(["judge", a, b, "--judge", "human", "--import", str(exported), "--out", str(out)]) == 0
    table = capsys.readouterr().out
    summary = json.loads((out / "summary.json").read_text())
    assert (summary["wins"], summary["losses"], summary["ties"]) == (4, 1, 1)
    assert summary["win_rate"] == pytest.approx(75.0)
    assert "75.0" in table
    verdicts = {
        v["id"]: v["verdict"] for v in map(json.loads, (out / "verdicts.jsonl").read_text().splitlines())
    }
    assert verdicts == {"0": "B", "1": "B", "2": "B", "3": "A", "4": "tie", "5": "B"}


def test_reward_judge_scores_match_unbatched_forwards(tmp_path, tokenizer):
    """A tiny randomly initialised reward model: each item's two rewards must equal the model's score of
    that text alone (no padding), whatever the batch, and the higher reward must win."""
    import torch
    from transformers import LlamaConfig, LlamaForSequenceClassification

    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=1,
        num_labels=1,
        pad_token_id=tokenizer.pad_token_id,
    )
    path = tmp_path / "rm"
    LlamaForSequenceClassification(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    a = _gen(tmp_path / "a.jsonl", ["red cat", "blue", "one two three", "sun"])
    b = _gen(tmp_path / "b.jsonl", ["dog", "green green", "moon", "star star star star"])
    out = tmp_path / "rj"
    assert main(["judge", a, b, "--judge", f"reward:{path}", "--batch-size", "3", "--out", str(out)]) == 0

    from orpo.evaluation.judges.reward import RewardJudge

    alone = RewardJudge(str(path), batch_size=1)
    verdicts = [json.loads(line) for line in (out / "verdicts.jsonl").read_text().splitlines()]
    for v in verdicts:
        i = int(v["id"])
        ra, rb = v["raw"]["reward_a"], v["raw"]["reward_b"]
        expect_a = alone.score([alone.text(f"prompt {i}", ["red cat", "blue", "one two three", "sun"][i])])[0]
        assert ra == pytest.approx(expect_a, abs=1e-5)
        assert v["verdict"] == ("B" if rb > ra else "A")
        assert rb != pytest.approx(ra)  # random weights: distinct texts get distinct rewards
    summary = json.loads((out / "summary.json").read_text())
    assert summary["per_model"]["A"]["reward"]["mean"] == pytest.approx(
        np.mean([v["raw"]["reward_a"] for v in verdicts])
    )
