"""``python -m inventory.cli`` runs ``planb``."""
from inventory.cli import main

main(prog_name="planb")
