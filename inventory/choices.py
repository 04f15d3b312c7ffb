"""Enumerations shared by the models, the estate file schema, the API and the UI.

Stored as plain strings (portable across SQLite and PostgreSQL, readable in
exports); the tuples here are the allowed values.
"""
from __future__ import annotations

PROVIDERS = ("aws", "azure", "gcp", "on_prem", "saas", "other")
OS_FAMILIES = ("windows", "linux", "macos", "other")
ENVIRONMENTS = ("production", "staging", "development", "test", "dr")
CRITICALITIES = ("critical", "high", "medium", "low")
CRITICALITY_WEIGHT = {"critical": 8, "high": 4, "medium": 2, "low": 1}

ASSET_KINDS = (
    "vm", "host", "database", "load_balancer", "target_group", "cluster", "scale_set",
    "function", "container", "network", "storage", "service", "saas_tenant", "application",
)
# Group assets: fail only when fewer than ``min_up`` members are up.
GROUP_KINDS = ("target_group", "cluster", "scale_set")
SERVICE_KIND = "service"

PRODUCT_KINDS = ("os", "agent", "application", "cloud_service", "saas", "database", "network", "firmware")

DEPENDENCY_KINDS = ("runs-on", "behind", "calls", "stores-in", "member-of")
# For "member-of" edges the *dependent* is the group and the *dependency* its member.
MEMBER_OF = "member-of"
STRENGTHS = ("hard", "soft")

UPDATE_KINDS = ("content", "patch", "major")
TEST_STATUSES = ("pending", "passed", "failed")
RINGS = ("canary", "staging", "production")
PRODUCTION_RING = "production"

PLAN_EVENT_KINDS = ("review", "exercise")
PLAN_OUTCOMES = ("passed", "partial", "failed")

RUN_STATUSES = ("running", "succeeded", "partial", "failed")
VENDOR_TIERS = ("critical", "high", "medium", "low")

ROLES = ("viewer", "editor", "admin")
TOKEN_ROLES = ("read", "write")

INCIDENT_STATUSES = ("open", "resolved")
HIT_STATUSES = ("down", "degraded")

ASSESSMENT_DOMAINS = ("security", "update_practices", "resilience", "compliance")
FINDING_SEVERITIES = ("critical", "high", "medium", "low")
FINDING_STATUSES = ("open", "accepted", "closed")

# AWS resource types the AWS collector reads, in the order it collects them in each region
# (target groups point at instances and functions that must already be stored).
AWS_RESOURCE_TYPES = ("ec2", "lambda", "elbv2", "rds", "eks")
