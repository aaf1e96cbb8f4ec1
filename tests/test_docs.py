"""The documentation site builds with warnings as errors, its examples pass, and its reference is the API.

One Sphinx build writes the HTML (``-W``: a broken link, a bad docstring or a page outside the table of contents
fails it), then the doctest builder runs every ``{doctest}`` block of the pages on the same parsed tree. The
reference must list every name the packages export, and every public method of Dataset and Context, so that
what other engineers add appears without anyone editing the docs.
"""

from __future__ import annotations

import inspect
import pathlib
import re
import subprocess
import sys

import drizzle_ml
import pytest

import drizzle_core as dz

pytestmark = pytest.mark.timeout(180)
ROOT = pathlib.Path(__file__).resolve().parent.parent


def _sphinx(builder: str, out: pathlib.Path, doctrees: pathlib.Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "sphinx", "-q", "-W", "--keep-going", "-b", builder,
                           "-d", str(doctrees), str(ROOT / "docs"), str(out)],
                          capture_output=True, text=True, timeout=150, cwd=ROOT)


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    out = tmp_path_factory.mktemp("docs")
    html = _sphinx("html", out / "html", out / "doctrees")
    assert html.returncode == 0, html.stderr
    return out


def _public(cls: type) -> set[str]:
    return {n for n, v in vars(cls).items() if not n.startswith("_") and (callable(v) or isinstance(v, property))}


def test_the_reference_documents_every_exported_name_and_method(site):
    core = (site / "html" / "api" / "drizzle_core.html").read_text()
    ml = (site / "html" / "api" / "drizzle_ml.html").read_text()
    ids = set(re.findall(r'id="([\w.]+)"', core)) | set(re.findall(r'id="([\w.]+)"', ml))
    documented = {i.rsplit(".", 1)[-1] for i in ids}
    missing = [n for n in dz.__all__ if n != "__version__" and n not in documented]
    missing += [f"drizzle_ml.{n}" for n in drizzle_ml.__all__ if n != "__version__" and n not in documented]
    for cls in (dz.Dataset, dz.Context, dz.DStream):
        missing += [f"{cls.__name__}.{n}" for n in sorted(_public(cls))
                    if not any(i.endswith(f".{cls.__name__}.{n}") for i in ids)]
    assert not missing, f"not in the API reference: {missing}"
    # generated from the docstrings, not written by hand
    first_line = inspect.getdoc(dz.Dataset.reduce_by_key).splitlines()[0]
    assert re.sub(r"<[^>]+>", "", first_line)[:30] in re.sub(r"<[^>]+>", "", core).replace("\n", " ")


def test_the_site_has_its_pages(site):
    html = site / "html"
    for page in ["getting-started", "coming-from-spark", "coming-from-dask", "coming-from-ray", "ray", "dask",
                 "guides/iterative-ml", "guides/streaming", "guides/multi-host", "guides/failures",
                 "guides/tuning-group-size", "guides/platforms"]:
        assert (html / f"{page}.html").is_file(), page
    index = (html / "index.html").read_text()
    assert "getting-started.html" in index and "api/drizzle_core.html" in index


def test_the_examples_in_the_pages_pass(site):
    run = _sphinx("doctest", site / "doctest", site / "doctrees")
    report = (site / "doctest" / "output.txt").read_text() if (site / "doctest" / "output.txt").exists() else ""
    assert run.returncode == 0, run.stderr + report
    totals = re.search(r"(\d+) tests\s+0 failures in tests\s+0 failures in setup code", report)
    assert totals and int(totals.group(1)) >= 40, report
    for page in ["getting-started", "coming-from-spark", "guides/streaming", "guides/tuning-group-size"]:
        assert f"Document: {page}\n" in report, page
