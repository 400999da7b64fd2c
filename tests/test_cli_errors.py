"""User mistakes on the command line end in one `specwise: error:` line, never a traceback."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest


def run_cli(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "specwise.cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def assert_one_line_error(proc: subprocess.CompletedProcess[str], *fragments: str) -> str:
    """Non-zero exit, one `specwise: error:` line holding every fragment as the last line of
    stderr (progress notes such as a first-run model fetch may precede it); returns it."""
    assert proc.returncode != 0, f"exit 0; stdout={proc.stdout!r}"
    assert "Traceback" not in proc.stderr, proc.stderr
    lines = proc.stderr.strip().splitlines()
    errors = [ln for ln in lines if ln.startswith("specwise: error:")]
    assert len(errors) == 1 and lines[-1] == errors[0], proc.stderr
    assert all(ln.startswith("specwise:") for ln in lines), proc.stderr
    line = errors[0]
    for fragment in fragments:
        assert fragment in line, line
    return line


def test_missing_model_file(tmp_path):
    missing = tmp_path / "no-such-model.gguf"
    assert_one_line_error(run_cli("generate", "hi", "--model", str(missing)), "not found", str(missing))


def test_corrupt_gguf_random_bytes(tmp_path):
    bad = tmp_path / "junk.gguf"
    bad.write_bytes(os.urandom(4096))
    assert_one_line_error(run_cli("generate", "hi", "--model", str(bad)), str(bad))


def test_empty_model_file(tmp_path):
    bad = tmp_path / "empty.gguf"
    bad.write_bytes(b"")
    assert_one_line_error(run_cli("generate", "hi", "--model", str(bad)), str(bad))


def test_model_dir_without_config(tmp_path):
    assert_one_line_error(run_cli("generate", "hi", "--model", str(tmp_path)), "config.json")


# SamplingParams and SpeculativeConfig are built before the model is loaded, and the
# prompt (or prompts file) is read before it too: these fail without loading a model.


def test_negative_num_speculative_tokens():
    assert_one_line_error(run_cli("generate", "hi", "--num-speculative-tokens", "-1"), "num_speculative_tokens", "-1")


def test_negative_temperature():
    assert_one_line_error(run_cli("generate", "hi", "--temperature", "-1"), "temperature")


@pytest.mark.parametrize(("flag", "value", "name"), [("--top-p", "1.5", "top_p"), ("--top-k", "-2", "top_k")])
def test_bad_sampling_flags(flag, value, name):
    assert_one_line_error(run_cli("generate", "hi", flag, value), name)


def test_bad_ngram_range():
    assert_one_line_error(run_cli("generate", "hi", "--ngram-min", "3", "--ngram-max", "2"), "n-gram")


def test_unknown_drafter():
    assert_one_line_error(run_cli("generate", "hi", "--drafter", "medusa"), "medusa")


def test_negative_draft_vocab():
    assert_one_line_error(run_cli("generate", "hi", "--drafter", "eagle", "--draft-vocab", "-5"), "draft_vocab")


def test_prompts_file_malformed_line_2(tmp_path):
    path = tmp_path / "p.jsonl"
    path.write_text(json.dumps({"prompt": "fine"}) + "\n" + '{"prompt": "oops",\n' + json.dumps({"prompt": "x"}) + "\n")
    assert_one_line_error(run_cli("generate", "--prompts", str(path)), f"{path}:2")


def test_missing_prompts_file(tmp_path):
    assert_one_line_error(run_cli("generate", "--prompts", str(tmp_path / "none.jsonl")), "none.jsonl")


def test_empty_prompt():
    assert_one_line_error(run_cli("generate", ""), "prompt")


def test_prompt_and_prompts_together(tmp_path):
    path = tmp_path / "p.jsonl"
    path.write_text(json.dumps({"prompt": "x"}) + "\n")
    assert_one_line_error(run_cli("generate", "hi", "--prompts", str(path)), "not both")


def test_output_in_missing_directory(tmp_path):
    assert_one_line_error(run_cli("generate", "hi", "--output", str(tmp_path / "nodir" / "out.jsonl")), "does not exist")


# Known loader gaps: incomplete checkpoints whose metadata lacks required keys.


def test_hf_config_missing_keys(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "llama"}))
    assert_one_line_error(run_cli("generate", "hi", "--model", str(tmp_path)))


def test_gguf_missing_metadata(tmp_path):
    gguf = pytest.importorskip("gguf")
    import numpy as np

    path = tmp_path / "nometa.gguf"
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_tensor("token_embd.weight", np.zeros((4, 8), dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    assert_one_line_error(run_cli("generate", "hi", "--model", str(path)))


# Needs the real default model (loading it takes seconds).


@pytest.mark.slow
def test_prompt_longer_than_context():
    prompt = "count with me: " + " ".join(str(i) for i in range(60))
    assert_one_line_error(run_cli("generate", prompt, "--max-model-len", "16"), "does not fit", "16")


@pytest.mark.parametrize(
    "args, fragment",
    [
        (["--drafter", "medusa"], "unknown drafter"),
        (["--drafter", "none,ngram"], "'none' cannot be loaded"),
        (["--max-queue", "-1"], "max_queue"),
        (["--num-speculative-tokens", "99"], "num_speculative_tokens"),
        (["--model", "/no/such/model.gguf"], "does not exist"),
    ],
)
def test_serve_refuses_bad_settings_before_loading(args, fragment):
    assert_one_line_error(run_cli("serve", "--port", "0", *args, timeout=60), fragment)


def test_serve_refuses_a_port_out_of_range():
    proc = run_cli("serve", "--port", "70000", timeout=60)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr and "0..65535" in proc.stderr


@pytest.mark.parametrize(
    "args, fragment",
    [
        (["--regex", "a(b"], "invalid regex"),
        (["--grammar", "{lark}"], "invalid grammar"),
        (["--json-schema", "{bad}"], "not valid JSON"),
        (["--json-schema", "{unsupported}"], 'Unimplemented keys: ["not"]'),
        (["--json-schema", "{missing}"], "cannot read"),
        (["--choice", "a", "--regex", "b"], "give one of"),
        (["--reasoning-end", "</think>"], "needs a constraint"),
        (["--prompts", "{prompts}"], "p.jsonl:2: response_format type 'xml'"),
    ],
)
def test_bad_constraints_are_one_line_errors_before_the_model_loads(tmp_path, capsys, args, fragment):
    """In-process (the same main() as the command; a subprocess per case costs seconds)."""
    from specwise.cli import main

    files = {
        "{lark}": ("g.lark", "start: undefined_rule\n"),
        "{bad}": ("bad.json", '{"type": "object",'),
        "{unsupported}": ("not.json", json.dumps({"type": "object", "not": {"required": ["a"]}})),
        "{prompts}": ("p.jsonl", '{"prompt": "hi"}\n{"prompt": "hi", "response_format": {"type": "xml"}}\n'),
    }
    resolved = []
    for arg in args:
        if arg in files:
            name, text = files[arg]
            (tmp_path / name).write_text(text)
            arg = str(tmp_path / name)
        elif arg == "{missing}":
            arg = str(tmp_path / "missing.json")
        resolved.append(arg)
    prompt = [] if "--prompts" in args else ["hi"]
    code = main(["generate", *prompt, *resolved, "--model", str(tmp_path / "never-loaded.gguf")])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and err.startswith("specwise: error:") and fragment in err, err


@pytest.mark.parametrize(
    "args, fragment",
    [
        (["--workload", "{missing}"], "cannot read"),
        (["--workload", "{malformed}"], "w.jsonl:2: not valid JSON"),
        (["--configs", "fixed,adaptive"], "needs plain"),
        (["--concurrency", "0"], "must be > 0"),
        (["--expected-concurrency", "2", "--expected-rate", "1"], "not both"),
        (["--endpoint", "http://127.0.0.1:9"], "127.0.0.1:9"),
    ],
)
def test_map_refuses_bad_input_in_one_line(tmp_path, capsys, args, fragment):
    from specwise.cli import main

    (tmp_path / "w.jsonl").write_text('{"prompt": "hi"}\n{"prompt": \n')
    subs = {"{missing}": str(tmp_path / "none.jsonl"), "{malformed}": str(tmp_path / "w.jsonl")}
    code = main(["map", *[subs.get(a, a) for a in args], "--output", str(tmp_path / "out"), "--model", str(tmp_path / "never.gguf")])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and err.startswith("specwise: error:") and fragment in err, err


@pytest.mark.parametrize(
    "args, fragment",
    [
        (["--acceptance", "1.5"], "in [0, 1]"),
        (["--acceptance", "0.6", "-k", "-1"], "-k must be in 0..32"),
        (["--acceptance", "0.6", "--verify-cost", "1:x"], "rows:time pairs"),
        (["--acceptance", "0.6", "--verify-cost", "1:1", "--moe-experts", "8", "--moe-top-k", "9"], "top-k must be in 1..experts"),
        (["--acceptance", "0.6", "--calibration", "{missing}"], "cannot read"),
        (["--acceptance", "0.6", "--draft-cost", "-0.1"], "--draft-cost must be >= 0"),
    ],
)
def test_plan_refuses_impossible_parameters_in_one_line(tmp_path, capsys, args, fragment):
    from specwise.cli import main

    code = main(["plan", *[str(tmp_path / "none.json") if a == "{missing}" else a for a in args]])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and fragment in err, err


def test_plan_prints_e_and_the_speedup(capsys):
    from specwise.cli import main

    assert main(["plan", "--acceptance", "0.6", "-k", "5", "--verify-cost", "1:1.0"]) == 0
    assert "E = 2.38 tokens per verify step with K = 5" in capsys.readouterr().out


@pytest.mark.parametrize(
    "args, fragment",
    [
        (["--calibration", "{missing}", "--concurrency", "2"], "cannot read"),
        (["--calibration", "{old}", "--concurrency", "2"], "version 2"),
        (["--calibration", "{foreign}", "--concurrency", "2"], "--force"),
        (["--calibration", "{old}"], "needs --concurrency or --rate"),
        (["--calibration", "{old}", "--rate", "-1"], "must be > 0"),
    ],
)
def test_simulate_refuses_bad_input_in_one_line(tmp_path, capsys, args, fragment):
    from specwise.cli import main

    files = {"{old}": {"version": 1}, "{foreign}": {"version": 2, "machine": {"cpu": "elsewhere", "cores": 1, "kernel_build": "x"}}}
    subs = {"{missing}": str(tmp_path / "none.json")}
    for name, data in files.items():
        (tmp_path / f"{name[1:-1]}.json").write_text(json.dumps(data))
        subs[name] = str(tmp_path / f"{name[1:-1]}.json")
    code = main(["simulate", *[subs.get(a, a) for a in args], "--output", str(tmp_path / "s.json")])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and fragment in err, err


def test_map_refuses_an_output_that_is_a_file(tmp_path, capsys):
    from specwise.cli import main

    (tmp_path / "taken").write_text("")
    code = main(["map", "--output", str(tmp_path / "taken"), "--model", str(tmp_path / "never.gguf")])
    err = capsys.readouterr().err
    assert code == 2 and "is a file" in err and err.count("\n") == 1, err
