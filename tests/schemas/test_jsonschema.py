"""The committed JSON Schema files match the models (regenerate: python -m schemas.generate)."""

from schemas.generate import OUT_DIR, render


def test_committed_json_schemas_match_models() -> None:
    rendered = render()
    for fname, text in rendered.items():
        path = OUT_DIR / fname
        assert path.exists(), f"{fname} missing: run python -m schemas.generate"
        assert path.read_text() == text, f"{fname} drifted: run python -m schemas.generate"
    committed = {p.name for p in OUT_DIR.glob("*.json")}
    assert committed == set(rendered), "stale schema files in schemas/jsonschema"
