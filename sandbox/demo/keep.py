"""`veil demo --keep`: after the demo, leave its instance running to explore by hand.

The demo's own tokens were never shown, so the operator issues a fresh token for one
principal of each role (audited like any other), and Acme grants the provider tiers 0-3
again (the demo revoked that grant and spent its budget), so that the provider has
something to preview and run.  Then the console's address and the tokens are printed,
and the instance runs until Ctrl-C (SIGINT) or SIGTERM, when the demo's context managers
stop the API, the job worker and the key server as after any demo.
"""

from __future__ import annotations

import signal
import sys
import threading
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from types import FrameType

from rich.console import Console

from i18n import N_, Msg
from i18n.catalog import _, translate
from sandbox.client import VeilClient
from sandbox.demo.letters import ProviderLetters

#: What the exploring provider may spend: enough for a few queries.
EXPLORE_EPSILON = 2.0
ROLE_LABELS = {
    "enterprise": N_("enterprise"),
    "provider": N_("provider"),
    "security_officer": N_("security officer"),
    "operator": N_("operator"),
}


@dataclass(frozen=True)
class Login:
    """A principal to log in as: its role, name and a fresh token."""

    role: str
    name: str
    token: str


def prepare_exploration(
    url: str, operator_token: str, columns: list[str], purpose: str
) -> list[Login]:
    """Issue a token per role and re-grant the provider tiers 0-3; the logins to print."""
    with VeilClient(url, operator_token) as operator:
        enterprise = next(e for e in operator.list_enterprises() if e["slug"] == "acme-metal")
        provider = operator.list_providers()[0]
        officer_id, officer_name = next(
            (t["principal_id"], t["principal_name"])
            for t in operator.list_tokens()
            if t["principal_role"] == "security_officer"
        )
        logins = [
            Login("enterprise", enterprise["name"], operator.issue_token(enterprise["id"])),
            Login("provider", provider["name"], operator.issue_token(provider["id"])),
            Login("security_officer", officer_name, operator.issue_token(officer_id)),
            Login("operator", "operator", operator_token),
        ]
    with VeilClient(url, logins[0].token) as acme, VeilClient(url, logins[1].token) as analyst:
        dataset = acme.list_datasets()[0]
        grant = acme.create_grant(
            provider["id"],
            [dataset["id"]],
            columns,
            [0, 1, 2, 3],
            [purpose],
            datetime.now(UTC) + timedelta(days=30),
            epsilon=EXPLORE_EPSILON,
        )
        ProviderLetters().commit(acme, analyst, str(grant["id"]))  # letters are on by default
    return logins


def print_logins(url: str, logins: list[Login], console: Console) -> None:
    """The console's address and a token per role, one per line (never wrapped: to copy)."""
    console.rule(_("The demo's instance keeps running: explore it"))

    def say(text: str) -> None:
        console.print(text, highlight=False, soft_wrap=True)

    say(translate(Msg("console: {url}/console", url=url)))
    say(translate(Msg("API: {url} (reference: {url}/docs)", url=url)))
    say(_("Log in with one of these tokens:"))
    for login in logins:
        role = Msg(ROLE_LABELS[login.role])  # translated as a parameter
        line = Msg("{role} ({name}): {token}", role=role, name=login.name, token=login.token)
        say("  " + translate(line))
    say(
        translate(
            Msg(
                "The provider has a fresh grant of tiers 0-3 (epsilon {epsilon:g}) to preview "
                "and run queries. For the CLI: export VEIL_URL={url} VEIL_TOKEN=<a token above>",
                epsilon=EXPLORE_EPSILON,
                url=url,
            )
        )
    )
    say(_("Press Ctrl-C to stop it."))
    sys.stdout.flush()  # a script that reads the address must see it now


def wait_for_stop() -> None:
    """Block until SIGINT or SIGTERM; the handlers before are restored."""
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        # A timeout, so that the signal handler runs promptly in this (the main) thread.
        while not stop.wait(0.5):
            pass
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
