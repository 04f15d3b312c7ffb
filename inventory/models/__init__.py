"""Plan B's data model, split by concept and re-exported here."""
from inventory.db import Base
from inventory.models.vendors import Product, UnattributedSoftware, Vendor, VendorAlias
from inventory.models.assets import Asset, Dependency, Installation, InventoryChange, InventoryVersion
from inventory.models.plans import ContingencyPlan, PlanEvent, PlanLink
from inventory.models.updates import UpdateTest, VendorUpdate
from inventory.models.risk import VendorAssessment
from inventory.models.runs import CollectionLock, CollectionRun, ScopeResult, ScopeState
from inventory.models.incidents import Incident, IncidentAsset, Scenario
from inventory.models.auth import ApiToken, AuditEvent, User
from inventory.models.identities import ExternalIdentity
from inventory.models.notifications import NotificationState, Webhook, WebhookDelivery
from inventory.models.pages import PageFigure

__all__ = [
    "Base", "Vendor", "VendorAlias", "Product", "UnattributedSoftware", "Asset", "Installation",
    "Dependency", "ContingencyPlan", "PlanLink", "PlanEvent", "VendorUpdate", "UpdateTest",
    "VendorAssessment", "CollectionRun", "ScopeResult", "ScopeState", "CollectionLock", "Scenario", "Incident",
    "IncidentAsset", "User", "ApiToken", "AuditEvent", "InventoryVersion", "InventoryChange", "ExternalIdentity",
    "Webhook", "WebhookDelivery", "NotificationState", "PageFigure",
]
