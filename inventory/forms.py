"""Flask-WTF forms for the dashboard's write paths (plans, plan events, updates, tests, assessments).

The forms check shape (required, numbers, ranges) and carry the CSRF token;
the rules that matter (unique names, http(s)-only links, known assets, dates
not in the future) live in the services, whose ``ValidationError`` names the
field — ``attach_error`` puts that message under the right input.
"""
from __future__ import annotations

from typing import Any, Iterable

from flask_wtf import FlaskForm
from wtforms import (BooleanField, DateField, Field, IntegerField, SelectChoice, SelectField, StringField,
                     TextAreaField)
from wtforms.validators import DataRequired, InputRequired, Length, NumberRange, Optional, StopValidation

from inventory.choices import (ASSESSMENT_DOMAINS, PLAN_EVENT_KINDS, PLAN_OUTCOMES, RINGS, TEST_STATUSES,
                               UPDATE_KINDS, VENDOR_TIERS)
from inventory.validation import ONE_LINE_MESSAGE, has_line_break, text_problem


class SingleLine:
    """Validator for one-line text (names, titles): CR, LF and other line breaks are refused."""

    def __call__(self, form: Any, field: Field) -> None:
        if isinstance(field.data, str) and has_line_break(field.data):
            raise StopValidation(f"{field.name}: {ONE_LINE_MESSAGE}")


class WholeNumberField(IntegerField):
    """An integer input that takes ASCII digits only (Python's int() also reads '١٢' as 12)."""

    def process_formdata(self, valuelist: list[Any]) -> None:
        if valuelist and isinstance(valuelist[0], str):
            raw = valuelist[0].strip()
            if raw and not (raw.lstrip("+-").isascii() and raw.lstrip("+-").isdigit()):
                self.data = None
                raise ValueError(self.gettext("Not a valid integer value."))
        super().process_formdata(valuelist)


class Form(FlaskForm):
    """Every dashboard form: text no database can store (NUL, lone surrogates) is refused
    with an error naming the field, in every text field, whatever its own validators say --
    never silently altered (see ``inventory.validation``).  The database layer would strip a
    NUL from a lookup, so 'Crowd\\x00Strike' would otherwise find CrowdStrike."""

    def validate(self, extra_validators: Any = None) -> bool:
        ok = super().validate(extra_validators)
        for field in self:
            for value in getattr(field, "raw_data", None) or ():
                problem = text_problem(value) if isinstance(value, str) else None
                if problem:
                    message = f"{field.name}: {problem}"
                    if message not in field.errors:
                        field.errors = [*field.errors, message]
                    ok = False
                    break
        return ok


def options(pairs: Iterable[tuple[str, str]]) -> list[SelectChoice]:
    """(value, label) pairs as WTForms select choices."""
    return [SelectChoice(value, label) for value, label in pairs]


def same(values: Iterable[str]) -> list[SelectChoice]:
    return options((v, v) for v in values)


TRISTATE = [("", "unknown"), ("true", "yes"), ("false", "no")]


def _lines(text: str | None) -> list[str]:
    return [line.strip() for line in (text or "").splitlines() if line.strip()]


class PlanForm(Form):
    name = StringField("Name", validators=[DataRequired(), SingleLine(), Length(max=200)])
    owner = StringField("Owner (team or person)", validators=[Optional(), Length(max=200)])
    rto_minutes = WholeNumberField("Recovery time objective (minutes)",
                                   validators=[Optional(), NumberRange(min=1, max=525_600)])
    review_interval_days = WholeNumberField("Review every (days)", default=180,
                                            validators=[InputRequired(), NumberRange(min=1, max=3650)])
    runbook_url = StringField("Runbook link (http/https)", validators=[Optional(), Length(max=1000)])
    steps = TextAreaField("Recovery steps", validators=[Optional(), Length(max=50_000)])
    manual_fallback = TextAreaField("Manual fallback (how the business keeps going meanwhile)",
                                    validators=[Optional(), Length(max=50_000)])
    cover_assets = TextAreaField("Covers assets (natural keys, one per line)", validators=[Optional()])
    cover_products = TextAreaField("Covers products ('Vendor/Product', one per line)", validators=[Optional()])
    cover_vendors = TextAreaField("Covers vendors (names, one per line)", validators=[Optional()])

    def to_data(self) -> dict[str, Any]:
        return {"name": self.name.data, "owner": self.owner.data, "rto_minutes": self.rto_minutes.data,
                "review_interval_days": self.review_interval_days.data, "runbook_url": self.runbook_url.data,
                "steps": self.steps.data, "manual_fallback": self.manual_fallback.data,
                "covers": {"assets": _lines(self.cover_assets.data),
                           "products": _lines(self.cover_products.data),
                           "vendors": _lines(self.cover_vendors.data)}}

    def fill_from(self, plan: dict[str, Any]) -> None:
        for key in ("name", "owner", "rto_minutes", "review_interval_days", "runbook_url", "steps",
                    "manual_fallback"):
            getattr(self, key).data = plan[key]
        covers = plan["covers"]
        self.cover_assets.data = "\n".join(a["natural_key"] for a in covers["assets"])
        self.cover_products.data = "\n".join(p["ref"] for p in covers["products"])
        self.cover_vendors.data = "\n".join(v["name"] for v in covers["vendors"])


class PlanEventForm(Form):
    kind = SelectField("What happened", choices=options((k, k.capitalize()) for k in PLAN_EVENT_KINDS))
    outcome = SelectField("Outcome", choices=options([("", "— (optional for a review)")]
                                                  + [(o, o) for o in PLAN_OUTCOMES]), validators=[Optional()])
    notes = TextAreaField("Notes", validators=[Optional(), Length(max=20_000)])


class UpdateForm(Form):
    product = SelectField("Product", choices=[], validators=[DataRequired()])
    version = StringField("Version", validators=[DataRequired(), Length(max=100)])
    released_on = DateField("Released on", validators=[Optional()])
    kind = SelectField("Kind", choices=same(UPDATE_KINDS), default="patch")
    vendor_pushed = BooleanField("Pushed by the vendor without customer staging")
    notes = TextAreaField("Notes", validators=[Optional(), Length(max=10_000)])


class UpdateTestForm(Form):
    ring = SelectField("Ring", choices=same(RINGS))
    status = SelectField("Result", choices=same(TEST_STATUSES))
    tested_by = StringField("Tested by (default: you)", validators=[Optional(), Length(max=200)])
    evidence_url = StringField("Evidence link (http/https)", validators=[Optional(), Length(max=1000)])
    notes = TextAreaField("Notes", validators=[Optional(), Length(max=10_000)])


class AssessmentForm(Form):
    vendor = SelectField("Vendor", choices=[], validators=[DataRequired()])
    assessed_on = DateField("Assessed on", validators=[DataRequired()])
    assessor = StringField("Assessor", validators=[Optional(), Length(max=200)])
    score_security = WholeNumberField("Security posture (0-5)", validators=[Optional(), NumberRange(0, 5)])
    score_update_practices = WholeNumberField("Update practices (0-5)", validators=[Optional(), NumberRange(0, 5)])
    score_resilience = WholeNumberField("Resilience / continuity (0-5)", validators=[Optional(), NumberRange(0, 5)])
    score_compliance = WholeNumberField("Compliance (0-5)", validators=[Optional(), NumberRange(0, 5)])
    staged_rollouts = SelectField("Staged rollouts", choices=options(TRISTATE), validators=[Optional()])
    customer_update_control = SelectField("Customer controls when updates land", choices=options(TRISTATE),
                                          validators=[Optional()])
    rollback_supported = SelectField("Updates can be rolled back", choices=options(TRISTATE), validators=[Optional()])
    certifications = TextAreaField("Certifications ('NAME: YYYY-MM-DD' expiry, one per line)",
                                   validators=[Optional()])
    findings = TextAreaField("Findings ('SEVERITY | STATUS | title', one per line; e.g. 'high | open | …')",
                             validators=[Optional()])
    next_review_due = DateField("Next review due (default: in a year)", validators=[Optional()])
    notes = TextAreaField("Notes", validators=[Optional(), Length(max=20_000)])

    def to_data(self) -> dict[str, Any]:
        certs = []
        for line in _lines(self.certifications.data):
            name, sep, expires = line.rpartition(":")
            certs.append({"name": name.strip(), "expires": expires.strip()} if sep else {"name": line})
        findings = []
        for line in _lines(self.findings.data):
            parts = [p.strip() for p in line.split("|")]
            if len(parts) >= 3:
                findings.append({"severity": parts[0].lower(), "status": parts[1].lower(),
                                 "title": "|".join(parts[2:]).strip()})
            elif len(parts) == 2:
                findings.append({"severity": parts[0].lower(), "title": parts[1]})
            else:
                findings.append({"title": line})
        return {
            "vendor": self.vendor.data, "assessed_on": self.assessed_on.data, "assessor": self.assessor.data,
            "scores": {d: getattr(self, f"score_{d}").data for d in ASSESSMENT_DOMAINS
                       if getattr(self, f"score_{d}").data is not None},
            "staged_rollouts": self.staged_rollouts.data or None,
            "customer_update_control": self.customer_update_control.data or None,
            "rollback_supported": self.rollback_supported.data or None,
            "certifications": certs, "findings": findings,
            "next_review_due": self.next_review_due.data, "notes": self.notes.data,
        }


# Service field names that differ from the form's.
_FIELD_ALIASES = {"covers.assets": "cover_assets", "covers.products": "cover_products",
                  "covers.vendors": "cover_vendors", "covers": "cover_assets", "at": "notes"}


def attach_error(form: FlaskForm, field: str | None, message: str) -> None:
    """Show a service ValidationError under the matching input (or as a form-level error)."""
    name = _FIELD_ALIASES.get(field or "", field or "")
    if name.startswith("scores."):
        name = "score_" + name.split(".", 1)[1]
    name = name.split("[", 1)[0]
    target = getattr(form, name, None) if name else None
    if target is not None and hasattr(target, "errors"):
        target.errors = list(target.errors or []) + [message]
    else:
        form.form_errors.append(message)


class VendorResilienceForm(Form):
    """Tier, substitutability and exit planning of a vendor (they feed the risk score)."""

    tier = SelectField("Tier", choices=same(VENDOR_TIERS))
    has_alternative = BooleanField("An alternative provider exists")
    alternative = StringField("Alternative (who, and how long a switch takes)",
                              validators=[Optional(), Length(max=500)])
    exit_plan_documented = BooleanField("An exit plan is documented")
    exit_plan_url = StringField("Exit plan link (http/https)", validators=[Optional(), Length(max=1000)])

    def to_data(self) -> dict[str, Any]:
        return {"tier": self.tier.data, "has_alternative": bool(self.has_alternative.data),
                "alternative": self.alternative.data or None,
                "exit_plan_documented": bool(self.exit_plan_documented.data),
                "exit_plan_url": self.exit_plan_url.data or None}
