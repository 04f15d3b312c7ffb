"""Notification messages as each receiver reads them: plain JSON, Slack, Microsoft Teams.

Every event is first described as a ``Message`` (title, one-line summary, facts,
a short list, a link back to Plan B); each format renders that the way its
receiver shows it best:

* ``json``: ``{"event", "event_id", "occurred_at", "title", "text", "url", "data"}``,
  ``data`` being the event's machine-readable details (documented per event).
* ``slack``: an incoming-webhook message with Block Kit blocks (header, section
  text and fields, a context line, a button to the incident) and a ``text``
  fallback for notifications.
* ``teams``: a message with one Adaptive Card attachment (version 1.4: what Teams
  incoming webhooks and Workflows "post to a channel when a webhook request is
  received" both render): title, summary, a FactSet, a list, an Open button.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

# Slack's documented limits: header text 150 characters, section text 3000, 10 fields of
# 2000 each, a button's URL 3000; Teams has no small limits but long cards read badly.
SLACK_HEADER_MAX = 150
SLACK_TEXT_MAX = 3000
SLACK_FIELDS_MAX = 10
SLACK_FIELD_MAX = 2000
URL_MAX = 3000
ITEMS_MAX = 10


@dataclass
class Message:
    """One notification, independent of the receiver's format."""

    title: str
    summary: str
    severity: str = "warning"  # "danger", "warning" or "good"
    facts: list[tuple[str, str]] = field(default_factory=list)
    items_title: str | None = None
    items: list[str] = field(default_factory=list)
    link: str | None = None
    link_label: str = "Open in Plan B"


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _slack_escape(text: str) -> str:
    # Slack's mrkdwn treats these three as control characters (links, mentions).
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def render_json(event: str, event_id: str, occurred_at: datetime, message: Message,
                data: dict[str, Any]) -> dict[str, Any]:
    return {"event": event, "event_id": event_id, "occurred_at": occurred_at.isoformat(),
            "title": message.title, "text": message.summary, "url": message.link, "data": data}


def render_slack(event: str, occurred_at: datetime, message: Message) -> dict[str, Any]:
    icon = {"danger": ":red_circle:", "warning": ":warning:", "good": ":white_check_mark:"}[message.severity]
    blocks: list[dict[str, Any]] = [
        {"type": "header", "text": {"type": "plain_text", "text": _cut(message.title, SLACK_HEADER_MAX),
                                    "emoji": True}},
        {"type": "section", "text": {"type": "mrkdwn",
                                     "text": _cut(f"{icon} {_slack_escape(message.summary)}", SLACK_TEXT_MAX)}},
    ]
    if message.facts:
        blocks.append({"type": "section", "fields": [
            {"type": "mrkdwn", "text": _cut(f"*{_slack_escape(label)}*\n{_slack_escape(value)}", SLACK_FIELD_MAX)}
            for label, value in message.facts[:SLACK_FIELDS_MAX]]})
    if message.items:
        lines = "\n".join(f"• {_slack_escape(item)}" for item in message.items[:ITEMS_MAX])
        heading = f"*{_slack_escape(message.items_title)}*\n" if message.items_title else ""
        blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": _cut(heading + lines, SLACK_TEXT_MAX)}})
    blocks.append({"type": "context", "elements": [
        {"type": "mrkdwn", "text": f"Plan B · `{event}` · {occurred_at:%Y-%m-%d %H:%M} UTC"}]})
    if message.link and len(message.link) <= URL_MAX:
        blocks.append({"type": "actions", "elements": [
            {"type": "button", "text": {"type": "plain_text", "text": message.link_label},
             "url": message.link, "action_id": "planb-open",
             **({"style": "danger"} if message.severity == "danger" else {})}]})
    return {"text": _cut(f"{message.title}: {message.summary}", SLACK_TEXT_MAX), "blocks": blocks}


def render_teams(event: str, occurred_at: datetime, message: Message) -> dict[str, Any]:
    color = {"danger": "Attention", "warning": "Warning", "good": "Good"}[message.severity]
    body: list[dict[str, Any]] = [
        {"type": "TextBlock", "text": message.title, "size": "Large", "weight": "Bolder", "color": color,
         "wrap": True, "style": "heading"},
        {"type": "TextBlock", "text": message.summary, "wrap": True},
    ]
    if message.facts:
        body.append({"type": "FactSet", "facts": [{"title": label, "value": value}
                                                  for label, value in message.facts]})
    if message.items:
        if message.items_title:
            body.append({"type": "TextBlock", "text": message.items_title, "weight": "Bolder", "wrap": True,
                         "spacing": "Medium"})
        body.append({"type": "TextBlock", "wrap": True,
                     "text": "\n".join(f"- {item}" for item in message.items[:ITEMS_MAX])})
    body.append({"type": "TextBlock", "text": f"Plan B · {event} · {occurred_at:%Y-%m-%d %H:%M} UTC",
                 "isSubtle": True, "size": "Small", "wrap": True, "spacing": "Medium"})
    card: dict[str, Any] = {"$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
                            "type": "AdaptiveCard", "version": "1.4", "body": body}
    if message.link and len(message.link) <= URL_MAX:
        card["actions"] = [{"type": "Action.OpenUrl", "title": message.link_label, "url": message.link}]
    return {"type": "message", "attachments": [
        {"contentType": "application/vnd.microsoft.card.adaptive", "contentUrl": None, "content": card}]}


def render(fmt: str, event: str, event_id: str, occurred_at: datetime, message: Message,
           data: dict[str, Any]) -> dict[str, Any]:
    """The body posted to a webhook of format ``fmt``."""
    if fmt == "slack":
        return render_slack(event, occurred_at, message)
    if fmt == "teams":
        return render_teams(event, occurred_at, message)
    return render_json(event, event_id, occurred_at, message, data)
