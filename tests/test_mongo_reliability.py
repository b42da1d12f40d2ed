"""MongoDB searches through outages, stops, upgrades and odd passwords: nothing lost, nothing silent.

Fixtures and helpers are those of test_mongo.py (the stand-in, the real scripts as processes).
"""
import subprocess
import sys
import urllib.parse

import pytest

import mongo_search
from conftest import ROOT

PASSWORDS = ["Xq7/Zt9", "Xq7@Zt9", "Xq7@Zt9/Kw3"]  # unencoded / or @: the URL is malformed


@pytest.mark.parametrize("script, password", zip(["hyperopt_optimize.py", "hyperopt_worker.py", "report.py"],
                                                 PASSWORDS))
def test_a_password_with_a_slash_or_an_at_is_never_printed(tmp_path, script, password):
    """The one line says to percent-encode the password, and shows none of it (driver, worker, report)."""
    url = f"mongo://hks:{password}@127.0.0.1:27017/hks/jobs"
    out = subprocess.run([sys.executable, f"{ROOT}/{script}", "--mongo", url, "--exp-key", "x"], cwd=tmp_path,
                         capture_output=True, text=True, timeout=120)
    lines = out.stderr.strip().splitlines()
    assert out.returncode != 0 and len(lines) == 1, out.stderr
    assert "Xq7" not in out.stdout + out.stderr and "Zt9" not in out.stdout + out.stderr
    assert "mongo://hks:***@127.0.0.1:27017/hks/jobs" in lines[0]
    assert "percent-encode the password" in lines[0] and "urllib.parse.quote('PASSWORD', safe='')" in lines[0]


@pytest.mark.parametrize("password", PASSWORDS)
def test_a_percent_encoded_password_is_read_back_and_never_shown(password):
    url = f"mongo://hks:{urllib.parse.quote(password, safe='')}@127.0.0.1:27017/hks/jobs"
    assert mongo_search.password_of(url) == password
    assert mongo_search.shown(url) == "mongo://hks:***@127.0.0.1:27017/hks/jobs"
    for malformed in (f"mongo://hks:{password}@127.0.0.1:27017/hks/jobs", f"mongo://{password}@db:1/hks/jobs"):
        with pytest.raises(SystemExit) as e:
            mongo_search.parse_url_or_exit(malformed)
        assert "Xq7" not in e.value.code and "Zt9" not in e.value.code and "percent-encode" in e.value.code
