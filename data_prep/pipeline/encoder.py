"""Token ids for `--format tokens`: Hugging Face `tokenizers`, or tiktoken where it gives the
same ids (several times faster per core).

Both run byte-level BPE: split the text with one regex, map each piece to its UTF-8 bytes,
then merge adjacent parts until no merge applies. They differ in how they pick the merge:
tokenizers applies the listed merges, the earliest in the list first; tiktoken merges any
adjacent pair whose bytes are a token, the lowest token id first, and returns a piece that is
a whole token at once. So tiktoken is loaded with the tokenizer's own vocabulary (ids as
ranks) and regex only where the two rules cannot part, checked when it is loaded
(`load_encoder`):

1. the tokenizer's shape: a BPE model (no dropout, no byte fallback, no subword prefix or
   suffix) behind a byte-level pre-tokenizer that splits with one regex (GPT-2's, from
   `ByteLevel(use_regex=True)`, or a `Split(regex, isolated)` before `ByteLevel(use_regex=
   False)`: Qwen2's, Llama 3's), without a prefix space; added tokens matched as written (not
   lstrip, rstrip, single_word or normalized); no normalizer, or NFC;
2. each merge makes a token whose id is no lower than the one before's (tiktoken's order);
   every token other than the 256 bytes is made by a merge (or tiktoken could make one that
   tokenizers never does);
3. every token is what tokenizers' BPE makes of its own bytes (tiktoken's whole-piece
   shortcut; tokenizers does the same only with `ignore_merges`);
4. the post-processor adds nothing to a single text, and a built-in probe text (every kind of
   character class, whitespace runs, digits, contractions, the tokenizer's added tokens inside
   words, NFC-sensitive sequences) gives the same ids both ways.

Where one fails, the conversion uses tokenizers and says why. The rest is done here as
tokenizers does it: added tokens are split out of the raw text first (leftmost, longest),
the normalizer applies to the text between them. NFC is Python's `unicodedata` (~25x faster
than calling tokenizers' normalizer per text), except for a text that holds a character the
two may treat apart (`_nfc_suspects`, found at load: their Unicode versions differ), which
goes through tokenizers' own.
tests/pipeline/test_encoder.py proves the ids equal on held-out text, every code point,
whitespace runs, added tokens in the text and long documents.
"""
from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from typing import Callable

import numpy as np

ENCODERS = ('auto', 'tiktoken', 'tokenizers')
# tokenizers' ByteLevel(use_regex=True) split (its byte_level.rs), which tiktoken's gpt2 also is
GPT2_PATTERN = r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""

# Every kind of text the regexes and BPE treat apart; the tokenizer's added tokens are put in
# between at load. Held-out text: none of it is in the sample the tokenizers are trained on.
PROBE = (
    "Hello world! It's 2024-12-06, the café's crème brûlée costs €3.50 (or $4).\n"
    "DON'T SHOUT, it'S I'M we'Ve they'LL you'd\tTabs\t\tand   spaces    end   \n\n\n"
    "  leading spaces\r\nWindows line\r\n\r\n\u00a0nbsp\u2003em\u3000ideographic\u200bzw\n"
    "Numbers 1234567890 3.14159 1,000,000 ١٢٣ ৪৫৬ ⅧⅨ ½ ²³ 0x1F 1e-9\n"
    "Ελληνικά Русский текст עברית العربية हिन्दी ภาษาไทย 한국어 日本語のテキスト 中文字符\n"
    "Emoji 👍🏽 👨‍👩‍👧‍👦 🇫🇷 ❤️ combining e\u0301 A\u030a \u212b \u2126 \u1e9b\u0323 "
    "q\u0307\u0323 \u0958 \u1100\u1161\u11a8 >\u0338 <\u0338\n"
    "code: def f(x):\n    return x**2  # comment\n\tif (a&&b) { c->d[0] += 1; }\n"
    "URL https://example.org/a/b?c=d&e=f#g mail@example.com ~/path/to/file.txt\n"
    "supercalifragilisticexpialidocious pneumonoultramicroscopicsilicovolcanoconiosis "
    "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa ............ ------ "
    "!!!??? ''''' \"\"\" ``` ___ *** ### <<< >>> ||| <| |> <|endoftext <|im_start\n"
    "trailing spaces   "
)


class Inexact(Exception):
    """tiktoken cannot load this tokenizer so that its ids equal tokenizers'; says why."""


@dataclass
class Encoder:
    """Encodes a batch of texts into int32 arrays of token ids, as `tokenizer(text)` would
    (special tokens the post-processor adds included)."""
    name: str                                    # 'tiktoken' or 'tokenizers'
    why: str                                     # why this one, for the run's output
    encode_batch: Callable[[list[str]], list[np.ndarray]]

    def describe(self) -> str:
        return f'{self.name} ({self.why})'


def backend(tok):
    """The `tokenizers.Tokenizer` of a transformers fast tokenizer, set as `tok(text,
    truncation=False, padding=False)` sets it: no truncation, no padding."""
    bt = tok.backend_tokenizer
    bt.no_truncation()
    bt.no_padding()
    return bt


def hf_encoder(tok, why: str) -> Encoder:
    """tokenizers' own batch encode (offsets not computed where it can skip them)."""
    bt = backend(tok)
    encode = getattr(bt, 'encode_batch_fast', bt.encode_batch)

    def encode_batch(texts: list[str]) -> list[np.ndarray]:
        return [np.array(e.ids, dtype=np.int32) for e in encode(texts)]

    return Encoder('tokenizers', why, encode_batch)


def load_encoder(tok, choice: str = 'auto') -> Encoder:
    """The encoder for a transformers fast tokenizer `tok`: tiktoken where it is exact
    (`choice` auto or tiktoken), else tokenizers. With `choice` tiktoken, a tokenizer tiktoken
    cannot load exactly raises Inexact; with auto it falls back and says why."""
    if choice not in ENCODERS:
        raise ValueError(f'encoder must be one of {", ".join(ENCODERS)}, not {choice!r}')
    if choice == 'tokenizers':
        return hf_encoder(tok, 'as asked')
    try:
        return tiktoken_encoder(tok)
    except Inexact as exc:
        if choice == 'tiktoken':
            raise
        return hf_encoder(tok, f'tiktoken cannot give the same ids for this tokenizer: {exc}')


# --------------------------------------------------------------------------- the checks

def _byte_decoder() -> dict[str, int]:
    """GPT-2's byte-level alphabet, back to bytes (the mapping tokenizers' ByteLevel uses)."""
    from transformers.models.gpt2.tokenization_gpt2 import bytes_to_unicode
    return {c: b for b, c in bytes_to_unicode().items()}


def _pattern(pre: dict | None) -> str:
    """The split regex of a byte-level pre-tokenizer tiktoken can run, or Inexact."""
    def byte_level(p: dict, use_regex: bool) -> bool:
        return (p.get('type') == 'ByteLevel' and not p.get('add_prefix_space')
                and bool(p.get('use_regex', True)) == use_regex)
    if pre and byte_level(pre, True):
        return GPT2_PATTERN
    steps = pre.get('pretokenizers', []) if pre and pre.get('type') == 'Sequence' else []
    if len(steps) == 2 and byte_level(steps[1], False):
        split = steps[0]
        if (split.get('type') == 'Split' and 'Regex' in split.get('pattern', {})
                and split.get('behavior') == 'Isolated' and not split.get('invert')):
            return split['pattern']['Regex']
    kind = (pre or {}).get('type')
    raise Inexact(f'its pre-tokenizer ({kind}) is not a byte-level regex split without a '
                  f'prefix space')


def _normalizer(norm: dict | None) -> str | None:
    """'NFC' or None; Inexact for any other normalizer."""
    if norm and norm.get('type') == 'Sequence' and len(norm.get('normalizers', [])) == 1:
        norm = norm['normalizers'][0]
    if norm is None:
        return None
    if norm.get('type') == 'NFC':
        return 'NFC'
    raise Inexact(f'its normalizer ({norm.get("type")}) is not NFC')


def _merges(model: dict) -> list[tuple[str, str]]:
    # tokenizers >= 0.20 writes [left, right]; older files 'left right'
    return [tuple(m) if isinstance(m, list) else tuple(m.split(' ', 1)) for m in model['merges']]


def _ranks(spec: dict, tok_backend) -> tuple[dict[bytes, int], dict[str, int]]:
    """(tiktoken's mergeable ranks: token bytes -> id, added tokens: text -> id), or Inexact."""
    model = spec.get('model') or {}
    if model.get('type') != 'BPE':
        raise Inexact(f'its model is {model.get("type")}, not BPE')
    if model.get('dropout') or model.get('byte_fallback') or model.get(
            'continuing_subword_prefix') or model.get('end_of_word_suffix'):
        raise Inexact('its BPE has dropout, byte fallback or a subword prefix or suffix')
    added = {}
    for a in spec.get('added_tokens', []):
        if a.get('lstrip') or a.get('rstrip') or a.get('single_word') or (
                a.get('normalized') and spec.get('normalizer')):
            raise Inexact(f'added token {a["content"]!r} is not matched as written')
        added[a['content']] = a['id']
    vocab: dict[str, int] = model['vocab']
    decoder = _byte_decoder()
    bpe_vocab = {text: i for text, i in vocab.items() if added.get(text) != i}  # added tokens
    # are matched in the raw text, never made by BPE
    strange = set(''.join(bpe_vocab)) - set(decoder)
    if strange:
        raise Inexact(f'its tokens hold {min(strange)!r}, not in the byte-level alphabet')
    to_bytes = str.maketrans({c: chr(b) for c, b in decoder.items()})
    ranks = {text.translate(to_bytes).encode('latin-1'): i for text, i in bpe_vocab.items()}
    if any(bytes([b]) not in ranks for b in range(256)):
        raise Inexact('its vocabulary lacks some of the 256 bytes')
    made, last = set(), -1
    for left, right in _merges(model):
        new = vocab.get(left + right)
        if new is None or left not in vocab or right not in vocab:
            raise Inexact(f'merge {left!r} + {right!r} names a token not in the vocabulary')
        if new < last:
            raise Inexact('its merges are not in the order of the ids they make')
        made.add(new)
        last = new
    if len(made) != len(ranks) - 256:
        raise Inexact(f'{len(ranks) - 256 - len(made)} tokens are made by no merge')
    if not model.get('ignore_merges'):
        # the BPE model alone (no normalizer, no split, no added tokens) on each token's text
        from tokenizers import Tokenizer
        texts = [text for text, i in bpe_vocab.items() if i in made]
        bpe_only = Tokenizer(tok_backend.model)
        for text, enc in zip(texts, bpe_only.encode_batch_fast(texts, add_special_tokens=False)):
            if len(enc.ids) != 1:
                raise Inexact(f'token {text!r} is not what BPE makes of its own bytes')
    return ranks, added


def _nfc_suspects(hf_nfc) -> Callable[[str], bool] | None:
    """Whether a text holds one of the characters for which Python's NFC may not do what
    tokenizers' does (their Unicode versions differ; e.g. Python 3.11 and tokenizers 0.21 treat
    U+0898 and U+1DF6 apart), or None. Tried, in one call for all, then in halves where they
    differ:

    - each combining mark Python knows, before and after one mark of every combining class
      (its own class decides where it moves);
    - each character with a decomposition, alone and as its decomposition (composition);
    - each character Python's tables do not know (a newer one), between marks of classes
      230 and 1 (if tokenizers' tables give it any class, it moves) and alone (decomposition).

    With each one found go the characters of its decompositions, both ways: a text of them
    composes into it in one and not in the other."""
    from tokenizers import normalizers
    hf_nfd = normalizers.NFD()
    marks, decomposable, unknown = [], [], []
    # Planes 4-13 (U+40000-U+DFFFF) hold no character in any Unicode version to date (16.0)
    for c in map(chr, [*range(0x80, 0x40000), *range(0xE0000, 0x110000)]):
        if unicodedata.category(c) == 'Cn':
            if not 0xD800 <= ord(c) <= 0xDFFF:
                unknown.append(c)
        elif unicodedata.combining(c):
            marks.append(c)
        elif unicodedata.decomposition(c):
            decomposable.append(c)
    def differing(chars: list[str], context, nfc: bool = True) -> list[str]:
        if not chars:
            return []
        text = ' '.join(map(context, chars))
        alike = unicodedata.normalize('NFD', text) == hf_nfd.normalize_str(text) and (
            not nfc or unicodedata.normalize('NFC', text) == hf_nfc.normalize_str(text))
        if alike:
            return []
        if len(chars) == 1:
            return chars
        half = len(chars) // 2
        return differing(chars[:half], context, nfc) + differing(chars[half:], context, nfc)

    # marks treated apart even beside the commonest marks first; the others beside one mark
    # of every class (not one of those: a mark one side does not know would fail them all)
    found = differing(marks, lambda c: f'a\u0301{c}\u0334 a{c}')
    by_class = {unicodedata.combining(m): m for m in reversed(marks) if m not in found}
    found += differing([m for m in marks if m not in found],
                       lambda c: ' '.join(f'a{m}{c} a{c}{m}' for m in by_class.values()))
    found += differing(decomposable, lambda c: f'{c} {unicodedata.normalize("NFD", c)}')
    found += differing(unknown, lambda c: f'\u0301{c}\u0334{c}', nfc=False)
    suspects = set(found)
    for c in found:
        suspects.update(unicodedata.normalize('NFD', c) + hf_nfd.normalize_str(c))
    return _char_class(suspects) if suspects else None


def _char_class(chars: set[str]) -> Callable[[str], bool]:
    """Whether a text holds one of `chars`. Python's re checks a class of BMP ranges at ~150
    MB/s and one that also holds characters past U+FFFF at ~10: so a first pass has the BMP
    ones and all of the rest (emoji are common, the suspects past U+FFFF rare), and only a text
    it matches is checked exactly."""
    ranges: list[list[int]] = []
    for c in sorted(map(ord, chars)):
        if ranges and c == ranges[-1][1] + 1:
            ranges[-1][1] = c
        else:
            ranges.append([c, c])

    def cls(rs) -> str:
        return '[' + ''.join(f'{re.escape(chr(a))}-{re.escape(chr(b))}' for a, b in rs) + ']'
    exact = re.compile(cls(ranges))
    quick = re.compile(cls([r for r in ranges if r[1] < 0x10000] + [[0x10000, 0x10FFFF]]))
    return lambda text: quick.search(text) is not None and exact.search(text) is not None


def tiktoken_encoder(tok) -> Encoder:
    """tiktoken on `tok`'s own vocabulary and regex, once every check above holds; else
    Inexact (or Inexact('tiktoken is not installed'))."""
    try:
        import tiktoken
    except ImportError:
        raise Inexact('tiktoken is not installed') from None
    import orjson
    bt = backend(tok)
    spec = orjson.loads(bt.to_str())
    pattern = _pattern(spec.get('pre_tokenizer'))
    norm = _normalizer(spec.get('normalizer'))
    ranks, added = _ranks(spec, bt)
    # The added tokens are split out here (below); tiktoken knows them only so that its scan
    # for special tokens has something to look for (with none it crawls) and never matches one
    # (nothing allowed, nothing refused: each is ordinary text, and no text here holds one).
    try:
        enc = tiktoken.Encoding('ours', pat_str=pattern, mergeable_ranks=ranks,
                                special_tokens=added)
    except Exception as exc:  # a regex its engine (fancy-regex) does not take
        raise Inexact(f'tiktoken cannot load its split regex ({str(exc)[:80]})') from None
    if added:
        def encode_ordinary(text: str) -> np.ndarray:
            return enc.encode_to_numpy(text, disallowed_special=()).view(np.int32)
    else:
        def encode_ordinary(text: str) -> np.ndarray:
            return np.array(enc.encode_ordinary(text), dtype=np.int32)

    if norm == 'NFC':
        hf_nfc = bt.normalizer
        suspects = _nfc_suspects(hf_nfc)

        def normalize(text: str) -> str:
            if text.isascii():  # unchanged by NFC: most web text
                return text
            if suspects is not None and suspects(text):
                return hf_nfc.normalize_str(text)
            return unicodedata.normalize('NFC', text)
    else:
        def normalize(text: str) -> str:
            return text

    # tokenizers matches added tokens leftmost-longest: alternatives longest first do the same
    split = re.compile('|'.join(re.escape(t) for t in sorted(added, key=len, reverse=True))) \
        if added else None
    firsts = sorted({t[0] for t in added})

    def encode(text: str) -> np.ndarray:
        if split is None or not any(c in text for c in firsts) or not split.search(text):
            return encode_ordinary(normalize(text))
        parts, pos = [], 0
        for m in split.finditer(text):
            if m.start() > pos:
                parts.append(encode_ordinary(normalize(text[pos:m.start()])))
            parts.append(np.array([added[m.group()]], dtype=np.int32))
            pos = m.end()
        if pos < len(text):
            parts.append(encode_ordinary(normalize(text[pos:])))
        return np.concatenate(parts)

    def encode_batch(texts: list[str]) -> list[np.ndarray]:
        return [encode(t) for t in texts]

    probe = PROBE + ''.join(f' x{t}y {t}\n{t}{t}>\u0338 ' for t in added) + PROBE
    want = bt.encode(probe, add_special_tokens=True).ids
    if want != bt.encode(probe, add_special_tokens=False).ids:
        raise Inexact('its post-processor adds tokens to a text (e.g. a BOS)')
    got = encode(probe).tolist()
    if got != want:
        at = next((i for i, (a, b) in enumerate(zip(got, want)) if a != b),
                  min(len(got), len(want)))
        raise Inexact(f'the probe text gives other ids (first at token {at})')
    return Encoder('tiktoken', f'tiktoken {tiktoken.__version__}: same ids as tokenizers, '
                   f'checked at load', encode_batch)
