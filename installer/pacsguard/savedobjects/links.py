"""Deep links into OpenSearch Dashboards: Discover and the User investigation dashboard.

The links sit in mustache message templates, so they hold placeholders
(`{{bucket_keys}}`, `{{ctx.periodEnd}}`) that Alerting or the pack's engine
fills in when the alert is sent. The app state is rison, as Dashboards writes
it in its own URLs; everything but the placeholders is percent-encoded here.
"""

from __future__ import annotations

from collections.abc import Sequence
from urllib.parse import quote

from pacsguard.core.settings import Settings
from pacsguard.savedobjects.render import object_id

INVESTIGATION_DASHBOARD = "user-investigation"
EVENTS_PATTERN = "events"
INVESTIGATION_FIELD = "related.user"  # actor or target: the account's whole story
_SAFE = "/:@!$'()*,;=?&.-_~"


def rison_string(text: str) -> str:
    """A rison string literal: quoted, with ' and ! escaped by !."""
    return "'" + text.replace("!", "!!").replace("'", "!'") + "'"


def _encode(url: str, placeholders: Sequence[str]) -> str:
    """Percent-encode url, keeping the mustache placeholders as they are."""
    marks = {f"PGMARK{i}X": p for i, p in enumerate(placeholders)}
    for mark, placeholder in marks.items():
        url = url.replace(placeholder, mark)
    url = quote(url, safe=_SAFE + "#")
    for mark, placeholder in marks.items():
        url = url.replace(mark, placeholder)
    return url


def _time(time_from: str, time_to: str) -> str:
    return f"time:(from:{rison_string(time_from)},to:{rison_string(time_to)})"


def discover_url(base: str, settings: Settings, query: str, time_from: str, time_to: str,
                 placeholders: Sequence[str] = ()) -> str:
    pattern = object_id(settings, "index-pattern", EVENTS_PATTERN)
    url = (f"{base.rstrip('/')}/app/data-explorer/discover#?"
           f"_a=(discover:(columns:!(_source),isDirty:!f,sort:!()),metadata:(indexPattern:{rison_string(pattern)},"
           f"view:discover))&_g=(filters:!(),refreshInterval:(pause:!t,value:0),{_time(time_from, time_to)})"
           f"&_q=(filters:!(),query:(language:lucene,query:{rison_string(query)}))")
    return _encode(url, placeholders)


def investigation_url(base: str, settings: Settings, user: str, time_from: str, time_to: str,
                      placeholders: Sequence[str] = ()) -> str:
    dash = object_id(settings, "dashboard", INVESTIGATION_DASHBOARD)
    query = f'{INVESTIGATION_FIELD}:"{user}"'
    url = (f"{base.rstrip('/')}/app/dashboards#/view/{dash}?_g=(filters:!(),{_time(time_from, time_to)})"
           f"&_a=(query:(language:lucene,query:{rison_string(query)}))")
    return _encode(url, placeholders)
