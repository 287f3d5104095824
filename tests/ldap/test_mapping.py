"""LDAP attributes to directory entries: OpenLDAP's and Active Directory's ways."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from common.config import ConfigError, load_config
from imctl.ldap_sync.config import LdapConfig
from imctl.ldap_sync.mapping import ou_path, synced_fields, to_entry, wanted_attributes

AD = LdapConfig(
    url="ldaps://dc1.corp.example.com",
    base_dn="DC=corp,DC=example,DC=com",
    user_filter="(&(objectCategory=person)(objectClass=user))",
    external_id_attribute="objectGUID",
    login_attribute="sAMAccountName",
    email_attribute="mail",
    department_from="department",
    disabled_attribute="userAccountControl",
)


def test_ous_below_the_base_are_the_department_path() -> None:
    base = "ou=people,dc=example,dc=com"
    assert ou_path(f"uid=ann,ou=dev,ou=eng,{base}", base) == ("eng", "dev")
    assert ou_path(f"uid=frank,{base}", "OU=People,DC=Example,DC=com") == ()  # DNs ignore case
    assert ou_path("CN=Ann,CN=Users,OU=R\\2CD,DC=corp,DC=com", "DC=corp,DC=com") == ("R,D",)
    assert ou_path("uid=x,ou=a\\,b,dc=example,dc=com", "dc=example,dc=com") == ("a,b",)


def test_openldap_entry() -> None:
    config = LdapConfig(url="ldap://x", base_dn="ou=people,dc=example,dc=com")
    raw = {
        "entryUUID": [b"BF687866-823F-1041-86B7-F79DF84BCC41"],
        "uid": [b"ann"],
        "displayName": [b" Ann "],
        "cn": ["Ann Árcher".encode()],
        "mail": [b"ann@example.com", b"second@example.com"],
        "pwdAccountLockedTime": [b"000001010000Z"],
    }
    entry = to_entry("uid=ann,ou=dev,ou=people,dc=example,dc=com", raw, config)
    assert entry.external_id == "bf687866-823f-1041-86b7-f79df84bcc41"  # one spelling, whatever the server's
    assert (entry.login, entry.nick, entry.real_name, entry.email) == (
        "ann",
        "Ann",
        "Ann Árcher",
        "ann@example.com",
    )
    assert entry.department == ("dev",) and entry.disabled
    assert not to_entry("uid=ann,dc=x", {**raw, "pwdAccountLockedTime": []}, config).disabled
    assert to_entry("uid=ann,dc=x", raw, config, disabled=True).disabled


def test_active_directory_entry() -> None:
    guid = uuid.UUID("6f9619ff-8b86-d011-b42d-00c04fc964ff")
    raw = {
        "objectGUID": [guid.bytes_le],
        "sAMAccountName": [b"ann"],
        "department": [b"Engineering/Compilers"],
        "userAccountControl": [b"514"],  # NORMAL_ACCOUNT | ACCOUNTDISABLE
    }
    entry = to_entry("CN=Ann,OU=Staff,DC=corp,DC=example,DC=com", raw, AD)
    assert entry.external_id == str(guid) and entry.login == "ann"
    assert entry.department == ("Engineering", "Compilers") and entry.disabled
    assert not to_entry("CN=Ann,DC=corp", {**raw, "userAccountControl": [b"512"]}, AD).disabled
    assert set(wanted_attributes(AD)) == {
        "objectGUID", "sAMAccountName", "displayName", "cn", "mail", "telephoneNumber", "department",
        "userAccountControl",
    }  # fmt: skip


def test_unmapped_attributes_are_not_synced() -> None:
    config = LdapConfig(tel_attribute="", nick_attribute="")
    assert synced_fields(config) == {"real_name", "email"}


def test_config_errors_name_the_key(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    for text, key in (
        ("url = 'http://x'", "ldap.url"),
        ("page_size = 5000", "ldap.page_size"),
        ("bind_password = 'x'", "ldap.bind_password"),  # no such setting: never in the config
        ("url = 'ldaps://x'\nstart_tls = true", "ldap.start_tls"),
    ):
        path.write_text(f"[ldap]\n{text}\n")
        with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
            load_config(LdapConfig, "ldap", path)
    password = tmp_path / "pw"
    password.write_text("s3cret\nignored\n")
    assert LdapConfig(bind_password_file=str(password)).password() == "s3cret"
    assert LdapConfig().password({"IMCLUSTER_LDAP_PASSWORD": "from-env"}) == "from-env"
    with pytest.raises(ConfigError, match="bind_password_file"):
        LdapConfig(bind_password_file=str(tmp_path / "missing")).password()


def test_the_readme_examples_are_valid_configs(tmp_path: Path) -> None:
    readme = (Path(__file__).parents[2] / "README.md").read_text()
    section = readme.split("### Directory sync (LDAP / Active Directory)", 1)[1].split("\n## ", 1)[0]
    blocks = [b.split("```", 1)[0] for b in section.split("```toml\n")[1:]]
    assert len(blocks) == 2
    configs = []
    for n, block in enumerate(blocks):
        path = tmp_path / f"{n}.toml"
        path.write_text(block)
        configs.append(load_config(LdapConfig, "ldap", path))
    openldap, ad = configs
    assert openldap.start_tls and openldap.external_id_attribute == "entryUUID"
    assert ad.url.startswith("ldaps://") and ad.external_id_attribute == "objectGUID"
    assert ad.disabled_attribute == "userAccountControl"
