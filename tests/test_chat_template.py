"""Chat templates (cllm/chat/template.py): rendering as transformers does, ids, the assistant mask, the chat
tokens, the tokenizer file's chat_template, `cli.py tokenizer apply-chat-template` and its errors. No torch or
transformers: the expected texts are written out from each template's definition (tests/test_hf_interop.py
compares with transformers itself)."""
import json
import os

import pytest

from cllm import cli
from cllm.chat.template import (
    CHATML_TEMPLATE,
    ChatTemplateError,
    add_chat_tokens,
    apply_chat_template,
    assistant_mask,
    chat_text,
    render_text,
)
from cllm.interop.hf import tokenizer_files
from cllm.tokenizers import load_tokenizer, train_tokenizer
from cllm.tokenizers.base import TokenizerFileError
from cllm.tokenizers.imports import import_tokenizer

TEXT = ("First Citizen: Before we proceed any further, hear me speak.\nAll: Speak, speak.\n"
        "First Citizen: You are all resolved rather to die than to famish?\nAll: Resolved. resolved.\n") * 20

# Llama 3's layout with a system-message branch (a default system prompt when the conversation has none), written
# over several lines: trim_blocks drops the newline after each {% %} tag, lstrip_blocks the indentation before it,
# and {{- ... -}} strip the template's own whitespace (newlines, indentation) around an expression
LLAMA3_TEMPLATE = """{{- bos_token -}}
{% if messages and messages[0]['role'] == 'system' %}
    {% set system = messages[0]['content'] | trim %}
    {% set rest = messages[1:] %}
{% else %}
    {% set system = 'You are a helpful assistant.' %}
    {% set rest = messages %}
{% endif %}
{{- '<|start_header_id|>system<|end_header_id|>\\n\\n' + system + '<|eot_id|>' -}}
{% for message in rest %}
    {% if message['role'] not in ('user', 'assistant') %}
        {{- raise_exception('after the system message, roles are user or assistant, not ' + message['role']) -}}
    {% endif %}
    {{- '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n' + message['content'] | trim -}}
    {{- '<|eot_id|>' -}}
{% endfor %}
{% if add_generation_prompt %}
    {{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' -}}
{% endif %}
"""
LLAMA3_SPECIALS = ("<|endoftext|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>")

CONV = [{"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hi there!"},
        {"role": "assistant", "content": "Hello.\nHow can I help? \u00fcber \u2603"},
        {"role": "user", "content": "  Speak, speak.  "},
        {"role": "assistant", "content": "I speak."}]


@pytest.fixture(scope="module")
def chatml_tok():
    return add_chat_tokens(train_tokenizer("bpe", TEXT, 300, progress=False))


@pytest.fixture(scope="module")
def llama_tok():
    tok = train_tokenizer("bpe", TEXT, 300, special_tokens=LLAMA3_SPECIALS, progress=False)
    tok.chat_template = LLAMA3_TEMPLATE
    return tok


def test_chatml_renders_each_message_and_the_generation_prompt():
    want = ("<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi there!<|im_end|>\n"
            "<|im_start|>assistant\nHello.\nHow can I help? \u00fcber \u2603<|im_end|>\n"
            "<|im_start|>user\n  Speak, speak.  <|im_end|>\n<|im_start|>assistant\nI speak.<|im_end|>\n")
    assert render_text(CHATML_TEMPLATE, CONV) == want
    assert render_text(CHATML_TEMPLATE, CONV[:2], add_generation_prompt=True) == (
        "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi there!<|im_end|>\n<|im_start|>assistant\n")
    assert render_text(CHATML_TEMPLATE, []) == ""


def test_llama3_style_template_bos_system_branch_trim_and_blocks():
    head = "<s><|start_header_id|>system<|end_header_id|>\n\n"
    turn = "<|start_header_id|>{}<|end_header_id|>\n\n{}<|eot_id|>"
    want = (head + "Be brief.<|eot_id|>" + turn.format("user", "Hi there!")
            + turn.format("assistant", "Hello.\nHow can I help? \u00fcber \u2603")
            + turn.format("user", "Speak, speak.") + turn.format("assistant", "I speak."))
    assert render_text(LLAMA3_TEMPLATE, CONV, bos_token="<s>") == want
    # no system message: the default one; the generation prompt opens an assistant turn
    assert render_text(LLAMA3_TEMPLATE, CONV[1:2], add_generation_prompt=True, bos_token="<s>") == (
        head + "You are a helpful assistant.<|eot_id|>" + turn.format("user", "Hi there!")
        + "<|start_header_id|>assistant<|end_header_id|>\n\n")


def test_environment_is_transformers_tojson_namespace_and_undefined():
    # tojson is json.dumps: no HTML escaping, non-ASCII kept, its keyword arguments
    conv = [{"role": "user", "content": "<b>&'\u00fc"}]
    assert render_text("{{ messages | tojson }}", conv) == json.dumps(conv, ensure_ascii=False)
    assert render_text("{{ messages[0] | tojson(indent=2, sort_keys=True) }}", conv) == json.dumps(
        conv[0], indent=2, sort_keys=True, ensure_ascii=False)
    # a variable nobody passes renders as nothing and is not defined (templates test for optional ones)
    assert render_text("[{{ nothing }}]{% if tools is none and nothing is not defined %}ok{% endif %}", []) == "[]ok"
    # keys whose value is None are dropped (OpenAI's content=None, tool_calls=None), as transformers does
    assert render_text("{{ messages[0].name is defined }}", [{"role": "user", "content": "x", "name": None}]) == "False"
    ns = "{% set ns = namespace(n=0) %}{% for m in messages %}{% set ns.n = ns.n + 1 %}{% endfor %}{{ ns.n }}"
    assert render_text(ns, CONV) == "5"
    loop = "{% for m in messages %}{% if loop.index > 2 %}{% break %}{% endif %}{{ m.role[0] }}{% endfor %}"
    assert render_text(loop, CONV) == "su"
    assert render_text("{% generation %}{{ messages[0].content }}{% endgeneration %}", CONV) == "Be brief."
    assert render_text("{{ dict(a=1)['a'] }} {{ strftime_now('%Y') | length }}", []) == "1 4"


@pytest.mark.parametrize("template, messages, needle", [
    ("{% for m in messages %}", CONV, "syntax error at line 1"),
    (LLAMA3_TEMPLATE, [{"role": "tool", "content": "x"}], "refused the conversation: after the system message, "
                                                          "roles are user or assistant, not tool"),
    ("{{ custom.field }}", CONV, "needs a variable or message field that CLLM does not pass"),
    ("{{ messages[0]['content'] }}", [], "uses a value that is not there"),
    ("{{ ''.__class__.__mro__ }}", [], "the sandbox forbids"),
    ("{% set ns = namespace(_x=1) %}", [], "the sandbox forbids"),
    ("{{ messages[0].content + 1 }}", CONV, "TypeError"),
    (CHATML_TEMPLATE, {"role": "user", "content": "x"}, "messages must be a list"),
    (CHATML_TEMPLATE, ["hello"], "message 0 must be an object"),
    (CHATML_TEMPLATE, [{"role": "user"}], "message 0: \"content\" must be a string (missing)"),
    (CHATML_TEMPLATE, [{"role": "user", "content": "a"}, {"role": 1, "content": "b"}],
     "message 1: \"role\" must be a string (a int)"),
    (None, CONV, "must be a string"),
])
def test_template_and_message_errors_are_one_clear_error(template, messages, needle):
    with pytest.raises(ChatTemplateError) as info:
        render_text(template, messages)
    assert needle in str(info.value)
    assert "\n" not in str(info.value)


def test_add_chat_tokens_single_ids_never_from_text(chatml_tok):
    tok = chatml_tok
    start, end = tok.special_tokens["<|im_start|>"], tok.special_tokens["<|im_end|>"]
    assert (start, end) == (tok.vocab_size - 2, tok.vocab_size - 1)  # after the merges and <|endoftext|>
    plain = tok.encode("<|im_start|>user\nhi<|im_end|>")
    assert start not in plain and end not in plain
    assert tok.encode("<|im_start|>user\nhi<|im_end|>", allowed_special="all")[0] == start
    assert tok.chat_template == CHATML_TEMPLATE
    size = tok.vocab_size
    assert add_chat_tokens(tok) is tok and tok.vocab_size == size  # a second call adds nothing


def test_add_chat_tokens_refuses_word():
    # a char tokenizer takes them (single-id specials: tests/test_chat_tasks.py); a word tokenizer cannot
    tok = train_tokenizer("word", TEXT, progress=False)
    with pytest.raises(ChatTemplateError, match="use a char or bpe tokenizer"):
        add_chat_tokens(tok)
    with pytest.raises(ChatTemplateError, match="has no chat template"):
        apply_chat_template(tok, CONV)
    tok.chat_template = CHATML_TEMPLATE
    with pytest.raises(ChatTemplateError, match="cannot encode special tokens as single ids"):
        apply_chat_template(tok, CONV)


def test_ids_are_the_text_with_special_tokens_as_single_ids(chatml_tok, llama_tok):
    for tok in (chatml_tok, llama_tok):
        for gen in (False, True):
            text = chat_text(tok, CONV[:4], gen)
            ids = apply_chat_template(tok, CONV[:4], gen)
            assert tok.decode(ids) == text
            assert ids == tok.encode(text, allowed_special="all")
    # no extra BOS: the Llama-3-style template writes bos_token (here <|endoftext|>, the BPE's BOS) itself
    ids = apply_chat_template(llama_tok, CONV)
    assert ids[0] == llama_tok.bos_id and ids[1] != llama_tok.bos_id
    assert chat_text(llama_tok, CONV).startswith("<|endoftext|><|start_header_id|>system")


def masked_runs(tok, ids, mask) -> list[str]:
    """The text of each run of consecutive masked tokens."""
    runs, cur = [], []
    for i, m in zip(ids, mask):
        if m:
            cur.append(i)
        elif cur:
            runs.append(tok.decode(cur))
            cur = []
    return runs + ([tok.decode(cur)] if cur else [])


def test_assistant_mask_covers_content_and_end_of_turn(chatml_tok, llama_tok):
    ids, mask = assistant_mask(chatml_tok, CONV)
    assert ids == apply_chat_template(chatml_tok, CONV) and len(mask) == len(ids)
    # the turn's content and <|im_end|>, not the header nor the newline after <|im_end|>
    assert masked_runs(chatml_tok, ids, mask) == ["Hello.\nHow can I help? \u00fcber \u2603<|im_end|>",
                                                  "I speak.<|im_end|>"]
    assert mask[-1] == 0 and chatml_tok.decode(ids[-1:]) == "\n"
    ids, mask = assistant_mask(llama_tok, CONV)
    assert masked_runs(llama_tok, ids, mask) == ["Hello.\nHow can I help? \u00fcber \u2603<|eot_id|>",
                                                 "I speak.<|eot_id|>"]
    # content holding the end-of-turn token: the turn still ends at its last one
    conv = [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a<|im_end|>b"}]
    ids, mask = assistant_mask(chatml_tok, conv)
    assert masked_runs(chatml_tok, ids, mask) == ["a<|im_end|>b<|im_end|>"]
    ids, mask = assistant_mask(chatml_tok, CONV[:2])  # no assistant turn
    assert not any(mask)


def test_assistant_mask_refuses_a_template_that_is_not_prefix_stable():
    tok = add_chat_tokens(train_tokenizer("bpe", TEXT, 300, progress=False))
    tok.chat_template = "{% for m in messages %}{{ m.role }}: {{ m.content }}{% if loop.last %} [end]{% endif %}\n" \
                        "{% endfor %}"
    with pytest.raises(ChatTemplateError, match="cannot find assistant message 2"):
        assistant_mask(tok, CONV)


def test_chat_template_is_saved_and_old_files_load(chatml_tok, tmp_path):
    path = tmp_path / "tok.json"
    chatml_tok.save(path)
    back = load_tokenizer(path)
    assert back.chat_template == CHATML_TEMPLATE
    assert apply_chat_template(back, CONV, True) == apply_chat_template(chatml_tok, CONV, True)
    d = json.loads(path.read_text(encoding="utf-8"))
    del d["chat_template"]  # a file written before chat templates
    path.write_text(json.dumps(d), encoding="utf-8")
    assert load_tokenizer(path).chat_template is None
    d["chat_template"] = ["not", "a", "string"]
    path.write_text(json.dumps(d), encoding="utf-8")
    with pytest.raises(TokenizerFileError, match="'chat_template'"):
        load_tokenizer(path)


def hf_dir(tok, path, **config) -> str:
    """A HuggingFace tokenizer directory: tok's tokenizer.json and a tokenizer_config.json of `config`."""
    os.makedirs(path)
    tok.export_hf(os.path.join(path, "tokenizer.json"))
    with open(os.path.join(path, "tokenizer_config.json"), "w", encoding="utf-8") as f:
        json.dump({"tokenizer_class": "PreTrainedTokenizerFast", **config}, f)
    return str(path)


def test_import_keeps_the_config_template_and_its_special_tokens(llama_tok, tmp_path):
    d = hf_dir(llama_tok, tmp_path / "a", eos_token="<|eot_id|>", chat_template=LLAMA3_TEMPLATE)
    tok = import_tokenizer(d)
    assert tok.chat_template == LLAMA3_TEMPLATE
    # only what the config names: no bos_token (transformers passes none), though CLLM's BOS id falls back to EOS
    assert tok.special_token_strings() == {"eos_token": "<|eot_id|>"}
    assert chat_text(tok, CONV).startswith("<|start_header_id|>system")
    assert apply_chat_template(tok, CONV) == llama_tok.encode(chat_text(tok, CONV), allowed_special="all")
    # the list form: the template named "default"; chat_template.jinja beside it wins, as in transformers
    named = [{"name": "tool_use", "template": "x"}, {"name": "default", "template": CHATML_TEMPLATE}]
    d = hf_dir(llama_tok, tmp_path / "b", chat_template=named)
    assert import_tokenizer(d).chat_template == CHATML_TEMPLATE
    with open(os.path.join(d, "chat_template.jinja"), "w", encoding="utf-8") as f:
        f.write(LLAMA3_TEMPLATE)
    assert import_tokenizer(d).chat_template == LLAMA3_TEMPLATE
    assert import_tokenizer(hf_dir(llama_tok, tmp_path / "c")).chat_template is None


def test_export_hf_writes_the_template_and_special_tokens(chatml_tok, tmp_path):
    config = tokenizer_files(chatml_tok, 64)["tokenizer_config.json"]
    assert config["chat_template"] == CHATML_TEMPLATE
    assert config["bos_token"] == config["eos_token"] == "<|endoftext|>"
    plain = train_tokenizer("bpe", TEXT, 280, progress=False)
    assert "chat_template" not in tokenizer_files(plain, 64)["tokenizer_config.json"]


def test_cli_apply_chat_template_ids_text_and_errors(chatml_tok, tmp_path, capsys):
    tok_path, conv_path = tmp_path / "tok.json", tmp_path / "conv.json"
    chatml_tok.save(tok_path)
    conv_path.write_text(json.dumps(CONV[:2]), encoding="utf-8")
    assert cli.main(["tokenizer", "apply-chat-template", str(tok_path), str(conv_path)]) == 0
    assert capsys.readouterr().out == " ".join(map(str, apply_chat_template(chatml_tok, CONV[:2]))) + "\n"
    args = ["tokenizer", "apply-chat-template", str(tok_path), str(conv_path), "--add-generation-prompt", "--text"]
    assert cli.main(args) == 0
    assert capsys.readouterr().out == render_text(CHATML_TEMPLATE, CONV[:2], add_generation_prompt=True)
    plain = tmp_path / "plain.json"
    train_tokenizer("bpe", TEXT, 280, progress=False).save(plain)
    for content, tok, needle in [
        ("[{\"role\": \"user\", ", tok_path, "is not valid JSON"),
        (json.dumps({"role": "user", "content": "x"}), tok_path, "messages must be a list"),
        (json.dumps([{"role": "user", "content": 3}]), tok_path, "\"content\" must be a string (a int)"),
        (json.dumps(CONV), plain, "has no chat template"),
    ]:
        conv_path.write_text(content, encoding="utf-8")
        assert cli.main(["tokenizer", "apply-chat-template", str(tok), str(conv_path)]) != 0
        err = capsys.readouterr().err
        assert needle in err and err.count("\n") == 1 and "Traceback" not in err
    assert cli.main(["tokenizer", "apply-chat-template", str(tok_path), str(tmp_path / "missing.json")]) != 0
    assert "does not exist" in capsys.readouterr().err
