"""The sandbox's fixtures, for the programme's tests on its world; and the scorecards' own
programme (a bureau, an enterprise, three providers it granted), services only."""

from tests.programme.test_scorecards import programme  # noqa: F401 - the scorecards' fixture
from tests.sandbox.conftest import api, crypto_profile, veil, world  # noqa: F401 - the sandbox's fixtures
