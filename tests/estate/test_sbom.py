"""SBOMs (CycloneDX 1.5 JSON, CycloneDX 1.6 XML, SPDX 2.3 JSON) as an application's components,
through the real CLI: attribution (supplier, publisher, manufacturer, author, then the purl
namespace), versions, replacement by a newer SBOM, refusals with file and position."""
from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
import yaml

from collectors.sbom import SbomError, load_file, parse
from inventory.db import make_engine, read_session
from inventory.models import Asset, CollectionRun, Installation, Product, UnattributedSoftware, Vendor
from tests.estate.conftest import run_cli, table_snapshot

SBOMS = Path(__file__).parent / "sboms"
APACHE = "Apache Software Foundation"

ESTATE: dict[str, Any] = {
    "version": 1,
    "vendors": [{"name": "Skyward Air", "patterns": [r"^pkg:maven/com\.skyward/", r"^pkg:npm/@skyward/"]},
                {"name": "Canonical", "products": [{"name": "Ubuntu", "kind": "os"}]}],
    "assets": [
        {"key": "host:pay-01", "name": "pay-01", "kind": "host", "os": {"family": "linux"},
         "software": [{"vendor": "Canonical", "product": "Ubuntu", "version": "22.04"}]},
        {"key": "app:payments-api", "name": "payments-api", "kind": "application", "criticality": "high",
         "depends_on": ["host:pay-01"]},
        {"key": "app:fares", "name": "fares", "kind": "application"},
    ],
    "services": [
        {"key": "svc:payments", "name": "Payments", "criticality": "critical", "depends_on": ["app:payments-api"]},
        {"key": "svc:booking", "name": "Booking", "criticality": "critical", "depends_on": ["svc:payments"]},
        {"key": "svc:loyalty", "name": "Loyalty", "depends_on": [
            {"to": "svc:payments", "kind": "calls", "strength": "soft"}]},
        {"key": "svc:fares", "name": "Fares", "depends_on": ["app:fares"]},
    ],
}


@pytest.fixture
def estate(cli_env: dict[str, str], tmp_path: Path) -> dict[str, str]:
    path = tmp_path / "estate.yaml"
    path.write_text(yaml.safe_dump(ESTATE, sort_keys=False))
    result = run_cli(cli_env, "import", str(path))   # the bare form still imports an estate file
    assert result.exit_code == 0, result.output
    return cli_env


def _impact(env: dict[str, str], *args: str) -> dict[str, Any]:
    result = run_cli(env, "impact", *args, "--format", "json")
    assert result.exit_code == 0, result.output
    return json.loads(result.output)


def _installations(env: dict[str, str], key: str) -> dict[str, tuple[str, str | None, str, dict[str, Any] | None]]:
    """product -> (vendor, version, source, attributes) of the asset's installations."""
    engine = make_engine(env["PLANB_DATABASE_URL"])
    try:
        with read_session(engine) as db:
            rows = db.execute(sa.select(Product.name, Vendor.name, Installation.version, Installation.source,
                                        Installation.attributes)
                              .join(Product, Product.id == Installation.product_id)
                              .join(Vendor, Vendor.id == Product.vendor_id)
                              .join(Asset, Asset.id == Installation.asset_id)
                              .where(Asset.natural_key == key)).all()
        return {p: (v, ver, src, attrs) for p, v, ver, src, attrs in rows}
    finally:
        engine.dispose()


def _import(env: dict[str, str], path: Path | str, key: str, *extra: str):  # type: ignore[no-untyped-def]
    return run_cli(env, "import", "sbom", str(path), "--asset", key, "--quiet", *extra)


# ------------------------------------------------------------------ the documents are real

@pytest.mark.parametrize("name, version, fmt", [("payments.cdx.json", "1.5", "json"),
                                                ("loyalty.cdx.xml", "1.6", "xml")])
def test_cyclonedx_fixtures_pass_the_librarys_own_validator(name: str, version: str, fmt: str) -> None:
    from cyclonedx.schema import SchemaVersion
    from cyclonedx.validation.json import JsonStrictValidator
    from cyclonedx.validation.xml import XmlValidator

    validator = (JsonStrictValidator if fmt == "json" else XmlValidator)(SchemaVersion.from_version(version))
    assert validator.validate_str((SBOMS / name).read_text()) is None


def test_spdx_fixture_passes_spdx_tools_validation() -> None:
    from spdx_tools.spdx.parser.parse_anything import parse_file
    from spdx_tools.spdx.validation.document_validator import validate_full_spdx_document

    assert validate_full_spdx_document(parse_file(str(SBOMS / "checkin.spdx.json")), "SPDX-2.3") == []


# ------------------------------------------------------------------ done when: log4j

def test_log4j_in_the_payments_sbom_hits_the_app_and_the_services_above_it(estate: dict[str, str],
                                                                           tmp_path: Path) -> None:
    sbom = tmp_path / "payments.cdx.json"
    shutil.copyfile(SBOMS / "payments.cdx.json", sbom)
    result = run_cli(estate, "import", "sbom", str(sbom), "--asset", "app:payments-api")
    assert result.exit_code == 0, result.output
    assert "6 component(s) as 6 product(s) of app:payments-api" in result.output

    data = _impact(estate, "--vendor", APACHE, "--version", "<2.17")
    seeds = {s["natural_key"]: s for s in data["seeds"]}
    assert set(seeds) == {"app:payments-api"}
    assert seeds["app:payments-api"]["matched"]["product"] in {"log4j-core", "log4j-api"}
    status = {h["natural_key"]: h["status"] for h in data["hits"]}
    assert status == {"app:payments-api": "down", "svc:payments": "down", "svc:booking": "down",
                      "svc:loyalty": "degraded"}
    assert data["version_unknown"] == []

    # 2.17 and later are not hit; the same SBOM answers "which apps run log4j at all"
    assert _impact(estate, "--vendor", APACHE, "--version", ">=2.17")["totals"]["hits"] == 0
    assert _impact(estate, "--vendor", APACHE, "--product", "log4j-core")["totals"]["seeds"] == 1

    installed = _installations(estate, "app:payments-api")
    assert installed["log4j-core"][:3] == (APACHE, "2.14.1", "sbom")           # by its supplier
    assert installed["log4j-core"][3]["purl"] == "pkg:maven/org.apache.logging.log4j/log4j-core@2.14.1?type=jar"
    assert installed["log4j-core"][3]["supplier"] == "The Apache Software Foundation"
    assert installed["log4j-api"][:2] == (APACHE, "2.14.1")                    # by its purl namespace
    assert installed["Microsoft.Extensions.Logging"][:2] == ("Microsoft", "8.0.0")
    assert installed["fare-rules"][:2] == ("Skyward Air", "1.0.0-SNAPSHOT")   # the estate's purl pattern
    assert installed["@skyward/seat-map"][:2] == ("Skyward Air", "latest")

    # The estate's asset keeps its identity: the SBOM only added installations.
    engine = make_engine(estate["PLANB_DATABASE_URL"])
    with read_session(engine) as db:
        asset = db.scalar(sa.select(Asset).where(Asset.natural_key == "app:payments-api"))
        assert (asset.source, asset.source_scope, asset.name, asset.criticality) == (
            "import", None, "payments-api", "high")
        unattributed = {(u.name, u.publisher) for u in db.scalars(sa.select(UnattributedSoftware))}
    engine.dispose()
    # FasterXML is no vendor Plan B knows and com.fasterxml is in no catalogue namespace: reviewed by hand
    assert unattributed == {("jackson-databind", "FasterXML")}
    listed = run_cli(estate, "vendors", "--unattributed", "--format", "json")
    assert "FasterXML" in listed.output


def test_versions_that_parse_compare_and_the_others_are_listed_as_version_unknown(estate, tmp_path):  # type: ignore[no-untyped-def]
    assert _import(estate, SBOMS / "payments.cdx.json", "app:payments-api").exit_code == 0
    # 1.0.0-SNAPSHOT is not PEP 440 but has a leading number: compared as 1.0.0
    data = _impact(estate, "--vendor", "Skyward Air", "--product", "fare-rules", "--version", ">=1.0")
    assert [s["natural_key"] for s in data["seeds"]] == ["app:payments-api"]
    # "latest" has no number at all: never a seed of a version range, listed to check by hand
    data = _impact(estate, "--vendor", "Skyward Air", "--product", "@skyward/seat-map", "--version", "<2")
    assert data["totals"]["hits"] == 0
    [unknown] = data["version_unknown"]
    assert unknown["natural_key"] == "app:payments-api"
    [inst] = unknown["installations"]
    assert (inst["version"], inst["source"]) == ("latest", "sbom")
    assert "'latest'" in inst["reason"] and "no number" in inst["reason"]


# ------------------------------------------------------------------ a new SBOM replaces the previous one

def test_a_new_sbom_replaces_the_previous_sbom_but_not_what_other_sources_found(estate, tmp_path):  # type: ignore[no-untyped-def]
    assert _import(estate, SBOMS / "payments.cdx.json", "host:pay-01").exit_code == 0
    before = _installations(estate, "host:pay-01")
    assert before["Ubuntu"][2] == "import" and before["log4j-core"][1] == "2.14.1"

    patched = json.loads((SBOMS / "payments.cdx.json").read_text())
    core = patched["components"][0]
    core["version"] = "2.17.1"
    core["purl"] = core["bom-ref"] = "pkg:maven/org.apache.logging.log4j/log4j-core@2.17.1?type=jar"
    patched["components"] = [c for c in patched["components"] if c["name"] != "jackson-databind"]
    patched["dependencies"] = [{"ref": c["bom-ref"], "dependsOn": []} for c in patched["components"]]
    path = tmp_path / "payments-2.cdx.json"
    path.write_text(json.dumps(patched))
    result = _import(estate, path, "host:pay-01", "--format", "json")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output)
    assert summary["run"]["status"] == "succeeded" and summary["components"] == 5

    after = _installations(estate, "host:pay-01")
    assert after["log4j-core"][1] == "2.17.1"
    assert after["Ubuntu"] == before["Ubuntu"]               # the estate file's installation stays
    engine = make_engine(estate["PLANB_DATABASE_URL"])
    with read_session(engine) as db:
        gone = db.scalar(sa.select(sa.func.count()).select_from(UnattributedSoftware)
                         .where(UnattributedSoftware.name == "jackson-databind"))
        scopes = db.scalars(sa.select(CollectionRun.scope).where(CollectionRun.collector == "sbom")
                            .order_by(CollectionRun.id)).all()
    engine.dispose()
    assert gone == 0                                          # removed with the old SBOM
    assert len(scopes) == 2 and scopes[-1].startswith("CycloneDX 1.5 (JSON)")
    assert _impact(estate, "--vendor", APACHE, "--product", "log4j-core", "--version", "<2.17")["totals"]["hits"] == 0


def test_an_sbom_for_a_new_key_creates_the_application_named_after_its_subject(estate):  # type: ignore[no-untyped-def]
    result = _import(estate, SBOMS / "checkin.spdx.json", "app:checkin-web")
    assert result.exit_code == 0, result.output
    engine = make_engine(estate["PLANB_DATABASE_URL"])
    with read_session(engine) as db:
        asset = db.scalar(sa.select(Asset).where(Asset.natural_key == "app:checkin-web"))
        assert (asset.name, asset.kind, asset.source, asset.source_scope) == (
            "checkin-web", "application", "sbom", "sbom:app:checkin-web")
        unattributed = {(u.name, u.publisher) for u in db.scalars(sa.select(UnattributedSoftware))}
    engine.dispose()
    installed = _installations(estate, "app:checkin-web")
    assert installed["@azure/msal-node"][:2] == ("Microsoft", "2.6.4")        # supplier
    assert installed["log4j-core"][:2] == (APACHE, "2.17.1")                   # originator
    assert installed["express"][:2] == ("OpenJS Foundation", "4.18.2")         # purl namespace
    assert "checkin-web" not in installed                                      # the described package
    assert unattributed == {("left-pad", "Azer Koculu")}
    # importing it again changes nothing and keeps the asset
    again = _import(estate, SBOMS / "checkin.spdx.json", "app:checkin-web", "--format", "json")
    assert json.loads(again.output)["run"]["created"] == 0
    assert json.loads(again.output)["run"]["updated"] == 0


def test_cyclonedx_xml_with_nested_components_and_manufacturer(estate):  # type: ignore[no-untyped-def]
    assert _import(estate, SBOMS / "loyalty.cdx.xml", "app:loyalty").exit_code == 0
    installed = _installations(estate, "app:loyalty")
    assert installed["Azure.Identity"][:2] == ("Microsoft", "1.10.4")          # manufacturer (1.6)
    assert installed["System.Text.Json"][:2] == ("Microsoft", "8.0.0")         # pkg:nuget/System.*
    assert installed["System.Text.Encodings.Web"][:2] == ("Microsoft", "8.0.0")   # nested component


def test_one_product_in_several_versions_is_version_unknown_with_every_version_listed(estate, tmp_path):  # type: ignore[no-untyped-def]
    doc = json.loads((SBOMS / "payments.cdx.json").read_text())
    twin = dict(doc["components"][0], version="2.17.1",
                purl="pkg:maven/org.apache.logging.log4j/log4j-core@2.17.1?type=jar")
    twin["bom-ref"] = "shaded-" + twin["purl"]
    doc["components"].append(twin)
    doc["dependencies"].append({"ref": twin["bom-ref"], "dependsOn": []})
    path = tmp_path / "two-log4j.cdx.json"
    path.write_text(json.dumps(doc))
    assert _import(estate, path, "app:payments-api").exit_code == 0
    vendor, version, _source, attrs = _installations(estate, "app:payments-api")["log4j-core"]
    assert (vendor, version) == (APACHE, None)
    assert attrs["versions"] == ["2.14.1", "2.17.1"] and len(attrs["purls"]) == 2
    data = _impact(estate, "--vendor", APACHE, "--product", "log4j-core", "--version", "<2.17")
    assert data["totals"]["hits"] == 0
    [entry] = data["version_unknown"]
    assert "several versions (2.14.1, 2.17.1)" in entry["installations"][0]["reason"]


# ------------------------------------------------------------------ refused documents

def _broken(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def _cdx_text() -> str:
    return (SBOMS / "payments.cdx.json").read_text()


@pytest.mark.parametrize("name, make, where", [
    ("syntax.cdx.json", lambda: _cdx_text().replace('"version": "2.14.1",', '"version": "2.14.1"', 1),
     "at line 30, column 7: not valid JSON: Expecting ',' delimiter"),
    ("schema.cdx.json", lambda: _cdx_text().replace('"version": "2.14.1",', '"version": 2.14,', 1),
     'at /components/0/version: not valid CycloneDX 1.5: 2.14 is not of type "string"'),
    ("version.cdx.json", lambda: _cdx_text().replace('"specVersion": "1.5"', '"specVersion": "1.2"'),
     "at /specVersion: CycloneDX 1.2 is not supported"),
    ("broken.cdx.xml", lambda: (SBOMS / "loyalty.cdx.xml").read_text().replace("</name>\n      <version>1.10.4",
                                                                              "\n      <version>1.10.4", 1),
     "at line 18, column"),
    ("schema.cdx.xml", lambda: (SBOMS / "loyalty.cdx.xml").read_text().replace(
        '<component type="library" bom-ref="pkg:nuget/Newtonsoft', '<component type="gadget" bom-ref="pkg:nuget/Newtonsoft'),
     "at line 19, column"),
    ("bad-id.spdx.json", lambda: (SBOMS / "checkin.spdx.json").read_text().replace(
        '"SPDXID": "SPDXRef-Package-express"', '"SPDXID": "Package express"'),
     "at /packages/1: not valid SPDX 2.3: spdx_id must only contain"),
    ("bad-type.spdx.json", lambda: (SBOMS / "checkin.spdx.json").read_text().replace(
        '"versionInfo": "2.6.4"', '"versionInfo": 2.6'),
     "at /packages/2: not valid SPDX 2.3"),
    ("old.spdx.json", lambda: (SBOMS / "checkin.spdx.json").read_text().replace("SPDX-2.3", "SPDX-2.2", 1),
     "at /spdxVersion: 'SPDX-2.2' is not supported"),
    ("other.json", lambda: '{"name": "not an sbom"}', "at /: not an SBOM"),
])
def test_a_malformed_document_is_refused_with_file_and_position_and_nothing_is_written(
        estate, tmp_path, name, make, where):  # type: ignore[no-untyped-def]
    path = _broken(tmp_path, name, make())
    engine = make_engine(estate["PLANB_DATABASE_URL"])
    before = table_snapshot(engine)
    result = _import(estate, path, "app:payments-api")
    assert result.exit_code == 1
    assert f"Error: SBOM refused, nothing written: {path} {where}" in result.output, result.output
    assert table_snapshot(engine) == before
    engine.dispose()


def test_an_sbom_without_components_or_with_a_bad_key_is_refused(estate, tmp_path):  # type: ignore[no-untyped-def]
    empty = {"bomFormat": "CycloneDX", "specVersion": "1.5", "version": 1,
             "metadata": {"component": {"type": "application", "name": "x"}}}
    path = _broken(tmp_path, "empty.cdx.json", json.dumps(empty))
    result = _import(estate, path, "app:payments-api")
    assert result.exit_code == 1 and "lists no components" in result.output
    result = _import(estate, SBOMS / "payments.cdx.json", "app::x")
    assert result.exit_code == 1 and "is not an asset key" in result.output


def test_parse_names_the_json_pointer_of_escaped_keys() -> None:
    doc = json.loads(_cdx_text())
    doc["components"][0]["properties"] = [{"name": "a/b~c", "value": 1}]
    with pytest.raises(SbomError) as info:
        parse(json.dumps(doc).encode(), "x.json")
    assert info.value.position == "/components/0/properties/0/value"
    assert load_file(SBOMS / "payments.cdx.json").subject == "payments-api"


def test_the_librarys_own_json_validator_says_the_same_when_the_fast_one_is_unavailable(monkeypatch) -> None:
    import collectors.sbom

    doc = json.loads(_cdx_text())
    doc["components"][2]["colour"] = "red"
    with pytest.raises(SbomError) as fast:
        parse(json.dumps(doc), "x.json")
    monkeypatch.setattr(collectors.sbom, "_fast_json_validator", lambda _version: None)
    with pytest.raises(SbomError) as slow:
        parse(json.dumps(doc), "x.json")
    assert fast.value.position == slow.value.position == "/components/2"
    assert "'colour' was unexpected" in str(fast.value) and "'colour' was unexpected" in str(slow.value)
    assert parse(_cdx_text(), "ok.json").format == "CycloneDX 1.5 (JSON)"
