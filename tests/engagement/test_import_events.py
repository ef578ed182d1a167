"""import_events: CSV and JSON Lines files validated with the API's rules."""

import json
import uuid
from datetime import UTC, datetime
from io import StringIO
from pathlib import Path

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from engagement.models import InteractionEvent, Product

pytestmark = pytest.mark.django_db

HEADER = "event_id,customer,product,hover_ms,dwell_ms,clicked,occurred_at\n"


def run(path: Path, *args: str) -> tuple[str, str]:
    out, err = StringIO(), StringIO()
    call_command("import_events", str(path), *args, stdout=out, stderr=err)
    return out.getvalue(), err.getvalue()


def eid() -> str:
    return str(uuid.uuid4())


def test_it_imports_a_csv_file_and_reports_bad_rows_by_file_line(tmp_path):
    path = tmp_path / "events.csv"
    path.write_text(
        HEADER
        + f"{eid()},c1,p1,1200,30000,true,2025-01-02T03:04:05Z\n"  # line 2
        + f"{eid()},c1,p2,-5,0,false,\n"  # line 3: below the API's minimum
        + f"{eid()},c2,p1,abc,0,0,\n"  # line 4: not an integer
        + "\n"  # line 5: blank, skipped
        + f"{eid()},,p1,10,0,yes,\n"  # line 6: no customer
        + f"{eid()},c2,p2,10,0,maybe,\n"  # line 7: not a boolean
        + f"{eid()},c2,p3,,,1,\n"  # line 8: empty cells take the defaults
    )
    out, err = run(path)
    assert "accepted 2, duplicates 0, rejected 4" in out
    lines = err.strip().splitlines()
    assert [line.split(":")[0] for line in lines] == ["line 3", "line 4", "line 6", "line 7"]
    assert "hover_ms" in lines[0] and "greater than or equal to 0" in lines[0]
    assert "valid integer" in lines[1]
    assert "customer" in lines[2]
    assert "clicked" in lines[3]
    first = InteractionEvent.objects.get(product__external_id="p1")
    assert (first.hover_ms, first.dwell_ms, first.clicked) == (1200, 30000, True)
    assert first.occurred_at == datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC)
    defaulted = InteractionEvent.objects.get(product__external_id="p3")
    assert (defaulted.hover_ms, defaulted.dwell_ms, defaulted.clicked) == (0, 0, True)


def test_it_imports_json_lines_with_the_apis_strict_types(tmp_path):
    path = tmp_path / "events.jsonl"
    good = {"event_id": eid(), "customer": "c1", "product": "p1", "hover_ms": 800, "clicked": False}
    path.write_text(
        json.dumps(good) + "\n"  # line 1
        + "\n"  # line 2: blank
        + json.dumps({**good, "event_id": eid(), "hover_ms": "800"}) + "\n"  # line 3: a string
        + "{not json\n"  # line 4
        + json.dumps([1, 2]) + "\n"  # line 5: not an object
        + json.dumps({**good, "event_id": eid(), "occurred_at": "2999-01-01T00:00:00Z"}) + "\n"  # line 6
    )
    out, err = run(path)
    assert "accepted 1, duplicates 0, rejected 4" in out
    assert [line.split(":")[0] for line in err.strip().splitlines()] == ["line 3", "line 4", "line 5", "line 6"]
    assert "future" in err.splitlines()[-1]


def test_it_counts_a_reimported_file_as_all_duplicates(tmp_path):
    path = tmp_path / "events.csv"
    path.write_text(HEADER + "".join(f"{eid()},c{i % 7},p{i % 11},{i},0,false,\n" for i in range(2500)))
    out, _ = run(path)
    assert "accepted 2500, duplicates 0, rejected 0" in out
    out, _ = run(path)
    assert "accepted 0, duplicates 2500, rejected 0" in out
    assert InteractionEvent.objects.count() == 2500
    assert Product.objects.filter(is_stub=True).count() == 11


def test_it_fails_only_when_the_file_cant_be_read(tmp_path):
    with pytest.raises(CommandError, match="Can't read"):
        run(tmp_path / "missing.csv")
    with pytest.raises(CommandError, match="format"):
        run(tmp_path / "events.txt")
    no_ids = tmp_path / "no_ids.csv"
    no_ids.write_text("customer,product\nc1,p1\n")
    with pytest.raises(CommandError, match="event_id"):
        run(no_ids)
    latin = tmp_path / "latin.csv"
    latin.write_bytes(HEADER.encode() + f"{eid()},caf\xe9,p1,1,0,false,\n".encode("latin-1"))
    with pytest.raises(CommandError, match="Can't read"):
        run(latin)


def test_it_takes_the_format_from_the_option_and_strict_fails_on_rejected_rows(tmp_path):
    path = tmp_path / "events.txt"
    path.write_text(HEADER + f"{eid()},c1,p1,1,0,false,\n" + f"{eid()},c1,p1,-1,0,false,\n")
    out, _ = run(path, "--format", "csv")
    assert "accepted 1, duplicates 0, rejected 1" in out
    with pytest.raises(CommandError, match="1 row"):
        run(path, "--format", "csv", "--strict")


def test_it_prints_at_most_max_errors_row_errors(tmp_path):
    path = tmp_path / "events.jsonl"
    path.write_text("nope\n" * 30)
    out, err = run(path, "--max-errors", "5")
    assert "rejected 30" in out
    assert err.count("line ") == 5 and "25 more" in err
