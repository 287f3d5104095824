"""Who may use the admin API, how imctl finds it, and the exit codes when it cannot."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from click.testing import CliRunner

from imctl.cli import main
from imctl.cluster import ServerProcess
from tests.cli.conftest import TOKEN, AdminCluster, free_port


def _http(url: str, token: str | None = None, method: str = "GET") -> tuple[int, bytes]:
    headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
    request = urllib.request.Request(url, headers=headers, method=method)
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


@pytest.mark.parametrize("token", [None, "wrong", TOKEN + "x", TOKEN[:-1]])
@pytest.mark.parametrize(
    ("method", "path"), [("GET", "/admin/v1/users"), ("POST", "/admin/v1/kick"), ("GET", "/admin/x")]
)
def test_the_api_refuses_a_missing_or_wrong_token(
    cluster: AdminCluster, token: str | None, method: str, path: str
) -> None:
    status, body = _http(cluster.url + path, token, method)
    assert (status, body) == (401, b'{"error": "unauthorized"}')


def test_exit_codes_for_bad_tokens_and_unreachable_clusters(cluster: AdminCluster) -> None:
    wrong = cluster.imctl("user", "list", token="wrong")
    assert wrong.exit_code == 4
    assert wrong.stderr.strip() == "Error: unauthorized: the admin token was refused"
    missing = cluster.imctl("user", "list", token=None)
    assert missing.exit_code == 4 and "no admin token" in missing.stderr
    nowhere = cluster.imctl("status", url=f"http://127.0.0.1:{free_port()}")
    assert nowhere.exit_code == 3 and nowhere.stderr.startswith("Error: cannot reach the cluster at")
    for result in (wrong, missing, nowhere):
        assert "Traceback" not in result.output and result.stdout == ""
    assert cluster.imctl("user", "list", "--limit", "many").exit_code == 2  # click's usage error


def test_url_and_token_from_the_environment_and_the_config(cluster: AdminCluster, tmp_path: Path) -> None:
    env = cluster.env(IMCLUSTER_URL=cluster.url, IMCLUSTER_TOKEN=TOKEN)
    result = CliRunner().invoke(main, ["--json", "user", "show", "alice"], env=env)
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["user"]["name"] == "alice"

    config = tmp_path / "imcluster.toml"
    config.write_text(f'[imctl]\nurl = "{cluster.url}"\ntoken = "{TOKEN}"\n')
    result = CliRunner().invoke(main, ["user", "show", "bob", "--config", str(config)], env=cluster.env())
    assert result.exit_code == 0 and "bob" in result.stdout
    # The login_server's own token in the same file does as well.
    config.write_text(f'[imctl]\nurl = "{cluster.url}"\n\n[login_server]\nadmin_token = "{TOKEN}"\n')
    result = CliRunner().invoke(main, ["--config", str(config), "user", "show", "bob"], env=cluster.env())
    assert result.exit_code == 0, result.output
    # An option beats the environment.
    env = cluster.env(IMCLUSTER_URL=cluster.url, IMCLUSTER_TOKEN="wrong")
    result = CliRunner().invoke(main, ["user", "show", "bob", "--token", TOKEN], env=env)
    assert result.exit_code == 0, result.output
    config.write_text("[imctl]\nsurprise = 1\n")
    result = CliRunner().invoke(main, ["--config", str(config), "user", "show", "bob"], env=cluster.env())
    assert result.exit_code == 2 and "imctl.surprise" in result.stderr


def test_no_admin_api_without_a_token(tmp_path: Path) -> None:
    login = ServerProcess(
        "login",
        "login-off",
        {"http_port": "0", "gateway_port": "0", "metrics_port": "0"},
        tmp_path / "ready",
        tmp_path / "log",
    )
    login.start(None)
    try:
        assert login.wait_ready(30), login.log_file.read_text()
        url = f"http://127.0.0.1:{login.info['http_port']}"
        assert _http(f"{url}/admin/v1/status", TOKEN)[0] == 404
        assert _http(f"{url}/admin/v1/status")[0] == 404
        result = CliRunner().invoke(
            main, ["--url", url, "--token", TOKEN, "status"], env={"IMCLUSTER_CONFIG": None}
        )
        assert result.exit_code == 3 and "no admin API" in result.stderr
    finally:
        login.stop(10)
