"""Collectors: one module per source, a shared record shape and a registry."""
