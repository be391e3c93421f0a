"""Round trips (Hypothesis): what is saved is loaded back equal; text is kept byte for byte."""

from __future__ import annotations

import math
import unicodedata
from pathlib import Path

from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st

import localstore
from localstore.blueprint import dump_yaml, parse_yaml, tag_problem
from localstore.errors import InvalidYAMLError
from tests.conftest import STRESS

EXAMPLES = 2000 if STRESS else 50
SETTINGS = settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

text = st.text(st.characters(exclude_categories=["Cs"], exclude_characters="\x00"), max_size=40)
scalars = (
    st.none()
    | st.booleans()
    | st.integers(-(2**62), 2**62)
    | text
    | st.floats(allow_nan=False, allow_infinity=False)
)
values = st.recursive(
    scalars,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(text, children, max_size=4),
    max_leaves=20,
)
documents = st.dictionaries(text, values, min_size=1, max_size=8)
comment = st.text(st.characters(whitelist_categories=("L", "N", "Zs", "P")), max_size=30).map(
    lambda s: "# " + s.replace("\n", " ")
)


def _equal(a, b) -> bool:
    if isinstance(a, float) and isinstance(b, float):
        return a == b or (math.isclose(a, b) and a != 0)
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_equal(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_equal(x, y) for x, y in zip(a, b, strict=True))
    return a == b and type(a) is type(b)


@SETTINGS
@given(doc=documents)
def test_mapping_round_trip(tmp_path_factory, doc) -> None:
    home = tmp_path_factory.mktemp("rt")
    with localstore.open(home=home, maintenance=False) as store:
        bp = store.save("doc", doc)
        assert _equal(store.load(bp.id).data(), doc)
    with localstore.open(home=home, maintenance=False) as store:
        assert _equal(store.load(bp.id).data(), doc)


@SETTINGS
@given(doc=documents, comments=st.lists(comment, min_size=1, max_size=5), crlf=st.booleans())
def test_text_round_trip_keeps_bytes(tmp_path_factory, doc, comments, crlf) -> None:
    body = dump_yaml(doc).splitlines()
    lines = []
    for i, line in enumerate(body):
        lines.append(line)
        if i < len(comments):
            lines.append(comments[i])
    text_doc = ("\r\n" if crlf else "\n").join([comments[0], *lines]) + "\n"
    try:
        same = _equal(parse_yaml(text_doc), doc)
    except InvalidYAMLError:
        same = False
    # A comment line put inside a multi-line scalar (a key of "\n" is dumped over two lines)
    # breaks the document or changes it: such a text is not this test's case.
    assume(same)
    home = tmp_path_factory.mktemp("rt")
    with localstore.open(home=home, maintenance=False) as store:
        bp = store.save("doc", text_doc)
        assert store.load(bp.id).content == text_doc
        raw = (home / "blueprints/doc.blueprint.yaml").read_bytes()
        assert raw == text_doc.encode("utf-8")


@SETTINGS
@given(
    name=text,
    description=text,
    tags=st.lists(
        # (What a save takes as a tag: one line, no control character. Other tags come only
        # through a meta file and are kept as they are: test_cli_consistency.py.)
        text.filter(lambda t: t.strip() == t and not tag_problem(t)),
        max_size=5,
        unique_by=lambda t: _nfc(t),
    ),
)
@example(name="", description="\U0002f800", tags=["\U0002f800"])  # (found by a CI run)
def test_meta_round_trip(tmp_path_factory, name, description, tags) -> None:
    """A local save stores name, description and tags composed (NFC), as documented: U+2F800, a
    CJK compatibility ideograph, comes back as U+4E3D (a singleton decomposition)."""
    home = tmp_path_factory.mktemp("rt")
    with localstore.open(home=home, maintenance=False) as store:
        bp = store.save("m", "a: 1\n", name=name or None, description=description, tags=tags)
    with localstore.open(home=home, maintenance=False) as store:
        got = store.load(bp.id).meta
        assert got.name == _nfc(name or "m") and got.description == _nfc(description)
        assert list(got.tags) == [_nfc(t) for t in tags]


def _nfc(text: str) -> str:
    return unicodedata.normalize("NFC", text)


def test_unicode_paths(tmp_path: Path) -> None:
    with localstore.open(home=tmp_path / "h") as store:
        for p in ("ünïcödé/flöw", "日本/ワークフロー", "emoji/🚀 launch"):
            bp = store.save(p, "a: 1\n")
            assert store.load(p).id == bp.id
        assert store.check().clean


# -- the meta file's encoding -------------------------------------------------------------------

any_text = st.text(max_size=30)  # surrogates and control characters included


@SETTINGS
@given(
    name=any_text,
    description=any_text,
    author=any_text,
    version=any_text,
    created=any_text,
    tags=st.lists(any_text, max_size=4),
    public=st.booleans(),
    encrypted=st.booleans(),
    extra=st.dictionaries(st.text(max_size=8), st.integers() | any_text, max_size=2),
)
def test_meta_encoders_match_json_dumps(
    name: str,
    description: str,
    author: str,
    version: str,
    created: str,
    tags: list[str],
    public: bool,
    encrypted: bool,
    extra: dict[str, object],
) -> None:
    """The hand-written encoders (used when there are no extra keys) write exactly what json.dumps
    writes, including escapes: the meta file, the tags column, the content hash's input. Lone
    surrogates are refused alike."""
    import hashlib
    import json

    from localstore.blueprint import BlueprintMeta, content_hash, encode_meta, new_id, tags_json

    meta = BlueprintMeta(
        id=new_id(),
        name=name,
        description=description,
        author=author,
        version=version,
        created=created,
        modified=created,
        tags=tuple(tags),
        public=public,
        encrypted=encrypted,
        extra=extra,
    )
    try:
        expected: bytes | type[Exception] = (
            json.dumps(meta.to_dict(), indent=2, ensure_ascii=False) + "\n"
        ).encode("utf-8")
    except UnicodeEncodeError:
        expected = UnicodeEncodeError
    if expected is UnicodeEncodeError:
        for encode in (encode_meta, lambda m: content_hash(b"", m)):
            try:
                encode(meta)
            except UnicodeEncodeError:
                continue
            raise AssertionError("a lone surrogate was encoded")
        return
    assert encode_meta(meta) == expected
    assert tags_json(meta.tags) == json.dumps(list(meta.tags), ensure_ascii=False)
    # The content hash sync compares, against its definition.
    semantic = meta.to_dict()
    semantic.pop("modified")
    h = hashlib.sha256(b"lsbp1\0" + (5).to_bytes(8, "big") + b"a: 1\n")
    h.update(
        json.dumps(semantic, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
    )
    assert content_hash(b"a: 1\n", meta) == h.hexdigest()


def test_encode_meta_falls_back_for_unusual_types() -> None:
    """A meta built in code with a non-string field still encodes as json.dumps would."""
    import json

    from localstore.blueprint import BlueprintMeta, encode_meta, new_id

    meta = BlueprintMeta(id=new_id(), name="n", version=3, public=1)  # type: ignore[arg-type]
    assert encode_meta(meta) == (
        json.dumps(meta.to_dict(), indent=2, ensure_ascii=False) + "\n"
    ).encode("utf-8")
