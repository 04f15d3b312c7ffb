"""Vendor attribution over real-world publisher strings, the shipped catalogue and estate aliases."""
from __future__ import annotations

import pytest
import sqlalchemy as sa

from collectors.attribution import (
    Attributor,
    Catalogue,
    load_catalogue_data,
    normalise,
    shipped_catalogue,
    stripped,
)
from inventory.db import make_engine, write_session
from inventory.models import Product, Vendor, VendorAlias


@pytest.fixture(scope="module")
def attributor() -> Attributor:
    return Attributor()


@pytest.mark.parametrize("raw, origin, expected", [
    ("CrowdStrike, Inc.", "publisher", ("CrowdStrike", None)),
    ("CrowdStrike.Falcon", "extension", ("CrowdStrike", "Falcon Sensor")),
    ("falcon-sensor", "package", ("CrowdStrike", "Falcon Sensor")),
    ("Microsoft Corporation", "publisher", ("Microsoft", None)),
    ("Canonical Ltd.", "publisher", ("Canonical", None)),
    ("Ubuntu Developers <ubuntu-devel-discuss@lists.ubuntu.com>", "maintainer", ("Canonical", None)),
    ("Red Hat, Inc.", "publisher", ("Red Hat", None)),
    ("Palo Alto Networks", "publisher", ("Palo Alto Networks", None)),
    ("Sentinel Labs, Inc.", "publisher", ("SentinelOne", None)),
    ("Trend Micro Inc.", "publisher", ("Trend Micro", None)),
    ("Oracle Corporation", "publisher", ("Oracle", None)),
    ("VMware, Inc.", "publisher", ("VMware", None)),
    ("Google LLC", "publisher", ("Google", None)),
    ("Mozilla", "publisher", ("Mozilla", None)),
    ("Qualys", "extension", ("Qualys", None)),
    ("Microsoft.Azure.Security.Monitoring", "extension", ("Microsoft", "Microsoft Defender for Cloud")),
    ("Microsoft.Azure.Security", "extension", ("Microsoft", None)),
    ("Debian Python Team <team+python@tracker.debian.org>", "maintainer", ("Debian", None)),
    ("GNU Libc Maintainers <debian-glibc@lists.debian.org>", "maintainer", ("Debian", None)),
    ("Utopia Maintenance Team <pkg-utopia-maintainers@lists.alioth.debian.org>", "maintainer", ("Debian", None)),
    ("Matthias Klose <doko@debian.org>", "maintainer", ("Debian", None)),
    ("Acme Widgets GmbH", "publisher", None),
    ("Fortinet Technologies (Canada) Inc.", "publisher", ("Fortinet", None)),
    ("Symantec Corporation", "publisher", ("Broadcom", None)),
    ("McAfee, LLC", "publisher", ("Trellix", None)),
    ("ESET, spol. s r.o.", "publisher", ("ESET", None)),
    ("AO Kaspersky Lab", "publisher", ("Kaspersky", None)),
    ("Zoom Video Communications, Inc.", "publisher", ("Zoom", None)),
    ("Python Software Foundation", "publisher", ("Python Software Foundation", None)),
    ("The PostgreSQL Global Development Group", "publisher", ("PostgreSQL Global Development Group", None)),
    ("Apple Inc.", "publisher", ("Apple", None)),
    ("Okta, Inc.", "publisher", ("Okta", None)),
    ("Cloudflare, Inc.", "publisher", ("Cloudflare", None)),
    ("Zscaler, Inc.", "publisher", ("Zscaler", None)),
    ("Tenable, Inc.", "publisher", ("Tenable", None)),
    ("Rapid7 LLC", "publisher", ("Rapid7", None)),
    ("Splunk, Inc.", "publisher", ("Splunk", None)),
    ("Datadog, Inc.", "publisher", ("Datadog", None)),
    ("Elasticsearch B.V.", "publisher", ("Elastic", None)),
    ("Adobe Systems Incorporated", "publisher", ("Adobe", None)),
    ("Cisco Systems, Inc.", "publisher", ("Cisco", None)),
    ("Sophos Limited", "publisher", ("Sophos", None)),
    ("Citrix Systems, Inc.", "publisher", ("Citrix", None)),
    ("SAP SE", "publisher", ("SAP", None)),
    ("Salesforce.com, Inc.", "publisher", ("Salesforce", None)),
    ("ServiceNow, Inc.", "publisher", ("ServiceNow", None)),
    ("Atlassian Pty Ltd", "publisher", ("Atlassian", None)),
    ("GitHub, Inc.", "publisher", ("GitHub", None)),
    ("HashiCorp, Inc.", "publisher", ("HashiCorp", None)),
    ("Docker Inc.", "publisher", ("Docker", None)),
    ("SUSE LLC", "publisher", ("SUSE", None)),
    ("Ivanti, Inc.", "publisher", ("Ivanti", None)),
    ("JetBrains s.r.o.", "publisher", ("JetBrains", None)),
    ("Slack Technologies, LLC", "publisher", ("Slack", None)),
    ("NodeSource Support <support@nodesource.com>", "maintainer", ("OpenJS Foundation", None)),
    ("Amazon Web Services, Inc.", "publisher", ("Amazon Web Services", None)),
    ("099720109477", "ami-owner", ("Canonical", None)),
    ("309956199498", "ami-owner", ("Red Hat", None)),
    ("amazon", "ami-owner", ("Amazon Web Services", None)),
    ("099720109477", "package", None),  # an AMI owner id means nothing elsewhere
    ("MicrosoftWindowsServer", "image", ("Microsoft", None)),
    ("Microsoft Visual C++ 2015-2022 Redistributable (x64)", "publisher", ("Microsoft", "Visual C++ Redistributable")),
    ("CrowdStrike Windows Sensor", "package", ("CrowdStrike", "Falcon Sensor")),
    ("com.crowdstrike.falcon.Agent", "bundle-id", ("CrowdStrike", "Falcon Sensor")),
    ("python-yaml", "package", None),  # package names never prefix-match a vendor
    ("", "publisher", None),
])
def test_attribute_real_world_strings(attributor, raw, origin, expected):
    assert attributor.attribute(raw, origin) == expected


@pytest.mark.parametrize("name, publisher, origin, expected", [
    ("CrowdStrike Windows Sensor", "CrowdStrike, Inc.", "package", ("CrowdStrike", "Falcon Sensor")),
    ("falcon-sensor", "CrowdStrike, Inc. <support@crowdstrike.com>", "package", ("CrowdStrike", "Falcon Sensor")),
    ("FalconSensorWindows", "CrowdStrike.Falcon", "extension", ("CrowdStrike", "Falcon Sensor")),
    ("MDE.Windows", "Microsoft.Azure.AzureDefenderForServers", "extension",
     ("Microsoft", "Microsoft Defender for Endpoint")),
    ("IaaSAntimalware", "Microsoft.Azure.Security", "extension", ("Microsoft", "Microsoft Antimalware")),
    ("QualysAgent", "Qualys", "extension", ("Qualys", "Qualys Cloud Agent")),
    # the publisher is the supplier: Debian's python3 is Debian's, named after the package
    ("python3", "Matthias Klose <doko@debian.org>", "package", ("Debian", "python3")),
    ("bash", "Matthias Klose <doko@debian.org>", "package", ("Debian", "bash")),
    ("Sentinel Agent", "Sentinel Labs, Inc.", "package", ("SentinelOne", "Singularity Agent")),
    ("Widget Pro", "Acme Widgets GmbH", "package", None),
    # OS, AMI and marketplace image names say what they are
    ("Ubuntu 22.04.4 LTS", None, "os", ("Canonical", "Ubuntu")),
    ("Microsoft Windows Server 2019 Datacenter", None, "os", ("Microsoft", "Windows Server")),
    ("Red Hat Enterprise Linux 9.4 (Plow)", None, "os", ("Red Hat", "Red Hat Enterprise Linux")),
    ("macOS 14.6.1", "Apple Inc.", "os", ("Apple", "macOS")),
    ("Windows_Server-2022-English-Full-Base-2024.07.10", "amazon", "ami-owner", ("Microsoft", "Windows Server")),
    ("ubuntu/images/hvm-ssd/ubuntu-jammy-22.04-amd64-server-20240701", "099720109477", "ami-owner",
     ("Canonical", "Ubuntu")),
    ("al2023-ami-2023.5.20240722.0-kernel-6.1-x86_64", "amazon", "ami-owner", ("Amazon Web Services", "Amazon Linux")),
    ("WindowsServer 2022-datacenter-azure-edition", "MicrosoftWindowsServer", "image", ("Microsoft", "Windows Server")),
    ("0001-com-ubuntu-server-jammy 22_04-lts-gen2", "Canonical", "image", ("Canonical", "Ubuntu")),
    ("RHEL 9-lvm-gen2", "RedHat", "image", ("Red Hat", "Red Hat Enterprise Linux")),
])
def test_attribute_software(attributor, name, publisher, origin, expected):
    assert attributor.attribute_software(name, publisher, origin) == expected


def test_normalisation():
    assert normalise("  CrowdStrike,   Inc. ") == "crowdstrike, inc."
    assert stripped("CrowdStrike, Inc.") == "crowdstrike"
    assert stripped("Debian Python Team <team+python@tracker.debian.org>") == "debian python team"
    assert stripped("SUSE Software Solutions Germany GmbH") == "suse software solutions germany"


def test_shipped_catalogue_is_large_and_names_the_vendors_we_rely_on():
    catalogue = shipped_catalogue()
    assert len(catalogue.vendors) >= 40
    required = {"Microsoft", "CrowdStrike", "SentinelOne", "Palo Alto Networks", "Trend Micro", "Canonical",
                "Red Hat", "Amazon Web Services", "Oracle", "VMware", "Okta", "Cloudflare", "Zscaler", "Qualys",
                "Tenable", "Rapid7", "Splunk", "Datadog", "Elastic", "Google", "Apple", "Adobe", "Cisco",
                "Fortinet", "Sophos", "Broadcom", "Trellix", "ESET", "Kaspersky", "Citrix", "SAP", "Salesforce",
                "ServiceNow", "Atlassian", "GitHub", "HashiCorp", "Docker", "Mozilla", "Debian", "SUSE", "Ivanti",
                "JetBrains", "Zoom", "Slack", "PostgreSQL Global Development Group", "Python Software Foundation",
                "OpenJS Foundation"}
    assert required <= set(catalogue.vendors)
    # the names the demo estate and the impact engine use
    assert "Falcon Sensor" in catalogue.vendors["CrowdStrike"].products
    assert {"Windows Server", "Microsoft Defender for Endpoint"} <= set(catalogue.vendors["Microsoft"].products)
    assert "Ubuntu" in catalogue.vendors["Canonical"].products
    assert "Red Hat Enterprise Linux" in catalogue.vendors["Red Hat"].products
    assert "macOS" in catalogue.vendors["Apple"].products
    assert "Singularity Agent" in catalogue.vendors["SentinelOne"].products
    assert catalogue.vendors["Amazon Web Services"].cloud_provider == "aws"
    assert catalogue.vendors["Microsoft"].cloud_provider == "azure"


def test_catalogue_rejects_duplicate_vendors():
    with pytest.raises(ValueError, match="listed twice"):
        Catalogue.from_data({"vendors": [{"name": "X"}, {"name": "X"}]})
    assert len(load_catalogue_data()["vendors"]) == len(shipped_catalogue().vendors)


def test_estate_aliases_override_and_extend_the_catalogue(any_db_url):
    engine = make_engine(any_db_url)
    try:
        with write_session(engine) as db:
            acme = Vendor(name="Acme Widgets")
            ours = Vendor(name="CrowdStrike Reseller Ltd")
            db.add_all([acme, ours])
            db.flush()
            widget = Product(vendor_id=acme.id, name="Widget Pro")
            db.add(widget)
            db.flush()
            db.add_all([
                VendorAlias(vendor_id=acme.id, alias="acme widgets gmbh"),
                VendorAlias(vendor_id=acme.id, product_id=widget.id, alias=r"^widget ?pro\b", is_pattern=True),
                VendorAlias(vendor_id=ours.id, alias="crowdstrike, inc."),  # overrides the catalogue
                VendorAlias(vendor_id=acme.id, alias="([unclosed", is_pattern=True),  # bad regex: ignored
            ])
        with write_session(engine) as db:
            attributor = Attributor(db)
            assert attributor.attribute("Acme Widgets GmbH") == ("Acme Widgets", None)
            assert attributor.attribute("Widget Pro 2024", "package") == ("Acme Widgets", "Widget Pro")
            assert attributor.attribute("CrowdStrike, Inc.") == ("CrowdStrike Reseller Ltd", None)
            assert attributor.attribute("Canonical Ltd.") == ("Canonical", None)  # catalogue still applies
    finally:
        engine.dispose()


def test_ensure_products_creates_catalogue_vendors_once(any_db_url):
    engine = make_engine(any_db_url)
    try:
        with write_session(engine) as db:
            db.add(Vendor(name="crowdstrike", tier="critical"))  # the estate spelled it differently
        with write_session(engine) as db:
            attributor = Attributor(db)
            ids = attributor.ensure_products(db, [("CrowdStrike", "Falcon Sensor"), ("Amazon Web Services",
                                                                                      "Amazon Linux")])
            again = attributor.ensure_products(db, [("CrowdStrike", "Falcon Sensor")])
            assert again[("CrowdStrike", "Falcon Sensor")] == ids[("CrowdStrike", "Falcon Sensor")]
        with write_session(engine) as db:
            vendors = {v.name: v for v in db.scalars(sa.select(Vendor))}
            assert set(vendors) == {"crowdstrike", "Amazon Web Services"}  # no duplicate CrowdStrike
            assert vendors["Amazon Web Services"].cloud_provider == "aws"
            assert vendors["Amazon Web Services"].website == "https://aws.amazon.com"
            falcon = db.scalars(sa.select(Product).where(Product.name == "Falcon Sensor")).one()
            assert (falcon.kind, falcon.vendor_pushes_updates) == ("agent", True)
    finally:
        engine.dispose()
