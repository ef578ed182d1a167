"""import_movielens: ratings become a catalog, customers and events (docs/data.md)."""

import os
from datetime import UTC, datetime
from io import StringIO
from pathlib import Path

import pytest
from django.conf import settings
from django.core.management import call_command
from django.core.management.base import CommandError

from engagement.importing import RATING_SIGNALS
from engagement.models import Customer, Engagement, InteractionEvent, Product

pytestmark = pytest.mark.django_db

GENRES = 19


def flags(*indexes: int) -> str:
    return "|".join("1" if i in indexes else "0" for i in range(GENRES))


def write_ml100k(directory: Path) -> Path:
    directory.mkdir()
    items = [
        f"1|Toy Story (1995)|01-Jan-1995||http://x|{flags(3, 4, 5)}",  # Animation first
        f"2|GoldenEye (1995)|01-Jan-1995||http://x|{flags(1, 2, 16)}",  # Action first
        f"3|Caf\xe9 Society (1995)|01-Jan-1995||http://x|{flags(8)}",  # Latin-1 title
        f"4|Lost (1996)|01-Jan-1996||http://x|{flags()}",  # no genre at all
    ]
    (directory / "u.item").write_bytes(("\n".join(items) + "\n").encode("latin-1"))
    ratings = [(1, 1, 5, 881250949), (1, 2, 1, 881250950), (2, 1, 3, 891717742),
               (2, 3, 4, 878887116), (3, 4, 2, 884182806), (3, 1, 4, 884182807)]  # fmt: skip
    (directory / "u.data").write_text("".join(f"{u}\t{i}\t{r}\t{t}\n" for u, i, r, t in ratings))
    return directory


def run(directory: Path) -> str:
    out = StringIO()
    call_command("import_movielens", str(directory), stdout=out, stderr=StringIO())
    return out.getvalue()


def test_it_imports_movies_as_a_named_catalog_with_the_first_genre_as_category(tmp_path):
    run(write_ml100k(tmp_path / "ml"))
    products = {p.external_id: p for p in Product.objects.all()}
    assert set(products) == {"ml-1", "ml-2", "ml-3", "ml-4"}
    assert products["ml-1"].category == "Animation" and products["ml-2"].category == "Action"
    assert products["ml-3"].name == "Café Society (1995)"
    assert products["ml-4"].category == "unknown"
    assert not any(p.is_stub for p in products.values())


def test_it_turns_each_rating_into_one_event_with_the_documented_mapping(tmp_path):
    output = run(write_ml100k(tmp_path / "ml"))
    assert "6 new events" in output
    assert set(Customer.objects.values_list("external_id", flat=True)) == {"ml-1", "ml-2", "ml-3"}
    loved = InteractionEvent.objects.get(customer__external_id="ml-1", product__external_id="ml-1")
    hated = InteractionEvent.objects.get(customer__external_id="ml-1", product__external_id="ml-2")
    assert (loved.hover_ms, loved.dwell_ms, loved.clicked) == (*RATING_SIGNALS[5], True)
    assert (hated.hover_ms, hated.dwell_ms, hated.clicked) == (*RATING_SIGNALS[1], False)
    assert loved.occurred_at == datetime.fromtimestamp(881250949, UTC)
    assert InteractionEvent.objects.filter(clicked=True).count() == 3  # ratings 5, 4, 4


def test_it_maps_ratings_monotonically_and_clicks_from_four_stars():
    ordered = [RATING_SIGNALS[r] for r in range(1, 6)]
    assert ordered == sorted(ordered)
    assert [h for h, _ in ordered] == sorted(set(h for h, _ in ordered))


def test_it_stores_nothing_twice_when_imported_again(tmp_path):
    directory = write_ml100k(tmp_path / "ml")
    run(directory)
    output = run(directory)
    assert "0 new events, 6 duplicates" in output and "0 new, 4 updated" in output
    assert InteractionEvent.objects.count() == 6


def test_it_reads_ml_1m_style_double_colon_files(tmp_path):
    directory = tmp_path / "ml-1m"
    directory.mkdir()
    (directory / "movies.dat").write_bytes("1::Toy Story (1995)::Animation|Children's|Comedy\n".encode("latin-1"))
    (directory / "ratings.dat").write_text("1::1::5::978300760\n7::1::2::978300761\n")
    output = run(directory)
    assert "2 new events" in output
    assert Product.objects.get(external_id="ml-1").category == "Animation"
    assert InteractionEvent.objects.filter(customer__external_id="ml-7").count() == 1


def test_it_reports_malformed_rating_lines_and_refuses_a_directory_without_ratings(tmp_path):
    directory = write_ml100k(tmp_path / "ml")
    with (directory / "u.data").open("a") as stream:
        stream.write("1\t3\tnine\t881250949\n")
    err = StringIO()
    call_command("import_movielens", str(directory), stdout=StringIO(), stderr=err)
    assert "u.data line 7" in err.getvalue()
    with pytest.raises(CommandError, match="u.data"):
        run(tmp_path)
    (directory / "u.item").write_text("just one field\n")
    with pytest.raises(CommandError, match="u.item line 1"):
        run(directory)


def datasets_dir() -> Path:
    default = Path(settings.BASE_DIR).parent / "shared" / "datasets"
    return Path(os.environ.get("RECSITE_DATASETS") or default)


def test_it_imports_the_real_ml_100k_as_100000_events_and_100000_engagement_rows():
    directory = datasets_dir() / "ml-100k"
    if not (directory / "u.data").is_file():
        message = (
            f"ml-100k is not at {directory}. Download https://files.grouplens.org/datasets/movielens/"
            "ml-100k.zip, unzip it and set RECSITE_DATASETS to the folder holding ml-100k/."
        )
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(message)
        pytest.skip(message)
    run(directory)
    assert InteractionEvent.objects.count() == 100_000
    assert Customer.objects.count() == 943
    assert Product.objects.filter(is_stub=False).count() == 1682

    call_command("compute_engagement", stdout=StringIO())

    # Each rating is one customer x product pair in ml-100k, so one row per event.
    assert Engagement.objects.count() == 100_000
