"""Update testing, contingency-plan lifecycle and vendor risk (issue #6)."""
