"""`cli.py chat` (cllm/commands/chat.py, cllm/chat/session.py) and `cli.py evaluate` on conversations
(cllm/chat/kind.py evaluate), with a tiny model trained a few seconds on data/chat/conversations.jsonl."""
import json
import shutil
import signal
import subprocess
import sys

import pytest
from train_helpers import CLI, ROOT, all_threads_after, assert_clean_error, read_metrics, run_cli, tiny_config  # noqa: F401

from cllm.chat.data import _split, read_conversations
from cllm.chat.generate import end_of_turn_ids
from cllm.chat.session import ChatSession
from cllm.chat.template import CHATML_TEMPLATE, add_chat_tokens, apply_chat_template
from cllm.completion import load_for_generation
from cllm.errors import ConfigError, DataError
from cllm.evaluate import evaluate_checkpoint
from cllm.generation import Generator, SamplingConfig
from cllm.tokenizers import train_tokenizer
from cllm.training import train

CONVERSATIONS = ROOT / "data" / "chat" / "conversations.jsonl"
VAL_FRACTION = 0.2
CONTEXT = 128
GREEDY = ["--temperature", "0", "--threads", "1"]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A run directory of a gpt2 of 32 dims, context 128, trained 150 steps (a few seconds) on the bundled
    conversations with a bpe tokenizer (ChatML's tokens and template), validated at its last step."""
    run = tmp_path_factory.mktemp("chat") / "run"
    train(tiny_config(CONVERSATIONS, run, tokenizer="bpe", vocab_size=300, val_fraction=VAL_FRACTION,
                      seq_len=CONTEXT, embed_dim=32, batch_size=8, max_steps=150, learning_rate=1e-2,
                      warmup_steps=5))
    return run


@pytest.fixture(scope="module")
def llama_run(tmp_path_factory):
    """The same with a llama (RoPE, RMSNorm, SwiGLU, one KV head)."""
    run = tmp_path_factory.mktemp("chat-llama") / "run"
    train(tiny_config(CONVERSATIONS, run, tokenizer="bpe", vocab_size=300, val_fraction=VAL_FRACTION,
                      seq_len=CONTEXT, embed_dim=32, batch_size=8, max_steps=100, learning_rate=1e-2,
                      warmup_steps=5, arch="llama", num_kv_heads=1))
    return run


def chat(run, lines, *flags, timeout=120):
    return run_cli("chat", "--checkpoint", run, *GREEDY, *flags, input="".join(f"{x}\n" for x in lines),
                   timeout=timeout)


def greedy_reply(run, messages, max_new_tokens):
    """The reply as generation gives it, without the chat code: the rendered prompt, greedy tokens until
    <|im_end|> or EOS."""
    model, tok, _ = load_for_generation(str(run), threads=1)
    ids = apply_chat_template(tok, messages, add_generation_prompt=True)
    ends = {tok.special_tokens["<|im_end|>"], tok.eos_id}
    out = []
    for token in Generator(model).stream(ids, SamplingConfig(temperature=0, max_new_tokens=max_new_tokens)):
        if token in ends:
            break
        out.append(token)
    return tok.decode(out)


# ------------------------------------------------------------------------------ chat
def test_piped_session_replies_as_greedy_generation_and_keeps_history(run):
    r = chat(run, ["What is two plus two?", "Spell the word cloud backwards.", "/exit"], "--max-new-tokens", "20",
             "--system", "Be brief.")
    assert r.returncode == 0 and r.stderr == "", r.stderr
    first = greedy_reply(run, [{"role": "system", "content": "Be brief."},
                               {"role": "user", "content": "What is two plus two?"}], 20)
    second = greedy_reply(run, [{"role": "system", "content": "Be brief."},
                                {"role": "user", "content": "What is two plus two?"},
                                {"role": "assistant", "content": first},
                                {"role": "user", "content": "Spell the word cloud backwards."}], 20)
    assert first.strip() and second.strip()
    assert r.stdout == f"{first}\n{second}\n"


def test_a_llama_chats_as_it_generates(llama_run):
    r = chat(llama_run, ["What is two plus two?", "Hello"], "--max-new-tokens", "12")
    assert r.returncode == 0 and r.stderr == "", r.stderr
    first = greedy_reply(llama_run, [{"role": "user", "content": "What is two plus two?"}], 12)
    second = greedy_reply(llama_run, [{"role": "user", "content": "What is two plus two?"},
                                      {"role": "assistant", "content": first}, {"role": "user", "content": "Hello"}],
                          12)
    assert first.strip() and r.stdout == f"{first}\n{second}\n"


def test_the_end_of_a_turn_is_the_special_token_the_template_writes_after_a_reply():
    tok = train_tokenizer("bpe", "Hello there, how are you? Fine, thanks. " * 20, 280,
                          special_tokens=("<|endoftext|>", "<|eot_id|>"), progress=False)
    eos, eot = tok.special_tokens["<|endoftext|>"], tok.special_tokens["<|eot_id|>"]
    tok.chat_template = "{% for m in messages %}{{ m.role }}: {{ m.content }}<|eot_id|>\n{% endfor %}"
    assert end_of_turn_ids(tok) == {eot, eos}
    # a template that closes a reply with a space and EOS (Llama 2's): EOS, not the space
    tok.chat_template = "{% for m in messages %}{{ m.role }}: {{ m.content }} {{ eos_token }}{% endfor %}"
    assert end_of_turn_ids(tok) == {eos}
    add_chat_tokens(tok)
    assert tok.chat_template == CHATML_TEMPLATE and end_of_turn_ids(tok) == {tok.special_tokens["<|im_end|>"], eos}


def test_reset_forgets_the_turns_and_keeps_the_system_message(run):
    fresh = chat(run, ["Hello"], "--max-new-tokens", "20", "--system", "Be brief.")
    after = chat(run, ["Spell the word cloud backwards.", "/reset", "Hello"], "--max-new-tokens", "20",
                 "--system", "Be brief.")
    assert (fresh.returncode, fresh.stderr) == (0, "") and fresh.stdout.endswith("\n")  # ended by end of input
    assert after.returncode == 0, after.stderr
    assert after.stdout.endswith(fresh.stdout) and len(after.stdout) > len(fresh.stdout)
    model, tok, _ = load_for_generation(str(run), threads=1)
    session = ChatSession(model, tok, system="Be brief.")
    session.send("Hello", SamplingConfig(temperature=0, max_new_tokens=5))
    session.reset()
    assert session.messages == [{"role": "system", "content": "Be brief."}]


def test_history_drops_the_oldest_turns_and_keeps_the_system_message(run):
    model, tok, _ = load_for_generation(str(run), threads=1)
    notes = []
    session = ChatSession(model, tok, system="Be brief.", notify=notes.append)
    asked = [f"How many letters are in the word {w}?" for w in ("cloud", "stone", "pencil", "river", "apple")]
    cfg = SamplingConfig(temperature=0, max_new_tokens=30, ignore_eos=True)  # every reply 30 tokens long
    for question in asked:
        session.send(question, cfg)
        # the prompt the reply followed (the conversation but the reply) plus the reply's budget fit the context
        assert len(apply_chat_template(tok, session.messages[:-1], add_generation_prompt=True)) + 30 <= CONTEXT
    users = [m["content"] for m in session.messages if m["role"] == "user"]
    assert session.messages[0] == {"role": "system", "content": "Be brief."}
    assert 1 <= len(users) < len(asked) and users == asked[-len(users):]  # the newest turns, whole, in order
    assert [m["role"] for m in session.messages[1:]] == ["user", "assistant"] * len(users)
    assert len(notes) == 1 and "dropped" in notes[0]
    r = chat(run, asked, "--max-new-tokens", "30", "--ignore-eos", "--system", "Be brief.")
    assert r.returncode == 0 and r.stderr.count("older turns were dropped") == 1, r.stderr
    assert len(r.stdout.splitlines()) >= len(asked)


def test_a_message_longer_than_the_context_is_refused_and_the_session_goes_on(run):
    r = chat(run, ["word " * 200, "Hello"], "--max-new-tokens", "10")
    assert r.returncode == 0 and "Traceback" not in r.stderr
    assert "error: the message does not fit" in r.stderr
    assert r.stdout == greedy_reply(run, [{"role": "user", "content": "Hello"}], 10) + "\n"


def test_exit_ends_cleanly(run):
    r = chat(run, ["/exit", "Hello"])
    assert (r.returncode, r.stdout, r.stderr) == (0, "", "")


def test_ctrl_c_ends_cleanly(run):
    p = subprocess.Popen([sys.executable, CLI, "chat", "--checkpoint", str(run), *GREEDY, "--max-new-tokens", "5"],
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)
    try:
        p.stdin.write("Hello\n")
        p.stdin.flush()
        p.stdout.readline()  # the reply: the session now waits for the next line
        p.send_signal(signal.SIGINT)
        _, err = p.communicate(timeout=60)
    finally:
        p.kill()
    assert p.returncode == 0 and "Traceback" not in err, err


def without_template(run, tmp_path):
    """A copy of the run's checkpoint whose tokenizer file has no chat template."""
    plain = tmp_path / "plain"
    shutil.copytree(run / "latest", plain)
    tok = json.loads((plain / "tokenizer.json").read_text())
    del tok["chat_template"]
    (plain / "tokenizer.json").write_text(json.dumps(tok))
    return plain


def test_a_checkpoint_without_a_chat_template_is_refused(run, tmp_path):
    assert_clean_error(chat(without_template(run, tmp_path), ["Hello"]), "no chat template")


# ------------------------------------------------------------------------------ evaluate
def evaluate(run, data):
    return evaluate_checkpoint(str(run), str(data), threads=1, progress=False)


def test_evaluate_on_conversations_equals_the_validation_loss(run, tmp_path):
    val_loss = [m["val_loss"] for m in read_metrics(run) if "val_loss" in m][-1]
    # the held-out conversations: the prepared dataset's val split, and the same rows as a JSONL file
    prepared = evaluate(run, run / "dataset")
    conversations, _ = read_conversations(CONVERSATIONS)
    held = _split(len(conversations), VAL_FRACTION)
    rows = [json.dumps({"messages": conv}) for (_, conv), h in zip(conversations, held) if h]
    (tmp_path / "held.jsonl").write_text("\n".join(rows) + "\n")
    rendered = evaluate(run, tmp_path / "held.jsonl")
    for result in (prepared, rendered):
        assert result["loss"] == pytest.approx(val_loss, rel=1e-6)
        assert result["conversations"] == held.sum() and result["scored_tokens"] > 0
    assert rendered["scored_tokens"] == prepared["scored_tokens"]
    everything = evaluate(run, CONVERSATIONS)
    assert everything["conversations"] == len(conversations) and everything["bad_rows"] == 0
    r = run_cli("evaluate", run, CONVERSATIONS, "--threads", "1")
    assert r.returncode == 0 and f"{len(conversations)} conversation(s); no bad rows" in r.stdout, r.stderr
    assert f"{everything['scored_tokens']:,} tokens scored" in r.stdout and f"{everything['loss']:.4f}" in r.stdout


def test_evaluate_reports_bad_rows(run, tmp_path):
    good = CONVERSATIONS.read_text().splitlines()[:3]
    bad = tmp_path / "some-bad.jsonl"
    bad.write_text("\n".join([good[0], "{not json", good[1], '{"messages": [{"role": "user", "content": "hi"}]}',
                              good[2]]) + "\n")
    result = evaluate(run, bad)
    assert result["conversations"] == 3 and result["bad_rows"] == 2
    assert f"{bad}:2: not JSON" in result["bad_rows_report"]
    assert f"{bad}:4: no assistant turn" in result["bad_rows_report"]


def test_evaluate_errors(run, tmp_path):
    none = tmp_path / "no-assistant.jsonl"
    none.write_text('{"messages": [{"role": "user", "content": "hi"}]}\n' * 2)
    assert_clean_error(run_cli("evaluate", run, none), "no conversation", "no assistant turn")
    with pytest.raises(DataError, match="no such file"):
        evaluate(run, tmp_path / "missing.jsonl")
    with pytest.raises(ConfigError, match="--stride does not apply"):
        evaluate_checkpoint(str(run), str(CONVERSATIONS), stride=8)
    with pytest.raises(DataError, match="no chat template"):
        evaluate(without_template(run, tmp_path), CONVERSATIONS)
