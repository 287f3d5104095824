"""scripts/haproxy and scripts/keepalived agree with each other and with docs/login-ha.md.

The tools themselves check the syntax where they are installed (``haproxy -c``,
``keepalived -t``: docs/login-ha.md); these checks need neither.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
HAPROXY = ROOT / "scripts" / "haproxy" / "haproxy.cfg"
MASTER = ROOT / "scripts" / "keepalived" / "keepalived.conf"
BACKUP = ROOT / "scripts" / "keepalived" / "keepalived-backup.conf"


def _setting(text: str, key: str) -> str:
    found = re.findall(rf"^\s*{key}\s+(\S+)", text, re.MULTILINE)
    assert len(found) == 1, f"{key}: {found}"
    return found[0]


def _peer(text: str) -> str:
    match = re.search(r"unicast_peer\s*\{\s*(\S+)\s*\}", text)
    assert match is not None
    return match.group(1)


def test_haproxy_fronts_login_servers_only() -> None:
    text = HAPROXY.read_text()
    servers = re.findall(r"^\s*server\s+\S+\s+(\S+)", text, re.MULTILINE)
    assert servers and all(s.endswith(":8080") for s in servers), servers  # login_servers' HTTP port
    assert "mode tcp" not in text  # no route server (8200) or db_proxy (10600) behind it


def test_keepalived_pair_is_one_master_and_one_backup() -> None:
    master, backup = MASTER.read_text(), BACKUP.read_text()
    assert (_setting(master, "state"), _setting(backup, "state")) == ("MASTER", "BACKUP")
    assert int(_setting(master, "priority")) > int(_setting(backup, "priority"))
    for key in ("virtual_router_id", "advert_int", "auth_pass", "interface"):
        assert _setting(master, key) == _setting(backup, key), key
    vip = re.compile(r"virtual_ipaddress\s*\{\s*([^}]*)\}")
    assert vip.findall(master) == vip.findall(backup) != []
    # Each one's unicast peer is the other's source address.
    assert _peer(master) == _setting(backup, "unicast_src_ip")
    assert _peer(backup) == _setting(master, "unicast_src_ip")
    assert _setting(master, "router_id") != _setting(backup, "router_id")


def test_keepalived_checks_what_haproxy_answers() -> None:
    monitor = _setting(HAPROXY.read_text(), "monitor-uri")
    port = re.search(r"^\s*bind\s+\S*:(\d+)", HAPROXY.read_text(), re.MULTILINE)
    assert port is not None
    for path in (MASTER, BACKUP):
        text = path.read_text()
        assert f"http://127.0.0.1:{port.group(1)}{monitor}" in text
        assert re.search(r"track_script\s*\{\s*check_haproxy\s*\}", text)
        assert "script_user" in text and "enable_script_security" in text  # the check never runs as root


@pytest.mark.skipif(shutil.which("haproxy") is None, reason="haproxy is not installed")
def test_haproxy_accepts_its_config() -> None:
    result = subprocess.run(["haproxy", "-c", "-f", str(HAPROXY)], capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stdout + result.stderr
