"""A labelled hospital: users with roles and shifts, normal work, travel, and attacks with near-misses.

`pacsguard simulate` writes the activity in the formats real sources use (generic JSON
for the viewer and sharing portal, Keycloak JSON console lines for logins and login
errors, DICOM audit messages (ATNA XML in RFC 5424 syslog frames, as rsyslog writes them)
for the archive's DICOM exports, which carry no roles) and ships the files through the
collector's file inputs, with a labels file (JSON lines: signal, entity, window, kind)
that `pacsguard backtest` scores alerts against, and the user directory as a CSV export
(roles, so "non-admin" holds for the DICOM events too).

Deterministic for a seed: the same seed, days, users and end time give the same files.
A warm-up of normal activity before the labelled days gives every user a history
(known countries, devices, external recipients, export baselines), as a real
installation has one; attacks and near-misses only happen in the labelled days.
"""

from __future__ import annotations

import csv
import datetime as dt
import hashlib
import io
import json
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pacsguard.core.connection import Cluster
from pacsguard.core.errors import PacsguardError
from pacsguard.core.settings import Settings

# Public addresses the bundled GeoLite2 data (2019-11-19) resolves: GB hospital and homes,
# US and SE for travel, CN for attackers.
HOSPITAL_IPS = ["81.2.69.142", "81.2.69.143", "81.2.69.144"]
HOME_IP = "81.2.69.160"
CLINIC_IP = "81.2.69.150"      # a partner clinic's NAT, behind which many people sign in
TRAVEL_IP = "216.160.83.56"   # US
RETURN_IP = "89.160.20.112"   # SE
ATTACK_IP = "175.16.199.1"    # CN
SPRAY_IP = "175.16.199.2"
APP = "cloudviewer"
PACS_HOST, PACS_AE = "pacs01.hospital.example", "HOSPACS"
WORKSTATION_IP = "10.20.1.15"  # the reading room's DICOM workstation
KC_REALM = "hospital"
ROLES = {"rad": "radiologist", "tech": "technician", "clerk": "clerk", "adm": "pacs-admin"}
UA = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 Chrome/126.0 Safari/537.36"
ATTACK_UA = "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0"
SLOT_MINUTES = 90
FIRST_SLOT_HOUR = 7


@dataclass(frozen=True)
class User:
    name: str
    role: str          # rad | tech | clerk | adm
    shift_start: int   # hour (UTC)
    weekend: bool      # works weekends
    device: str
    referrers: tuple[str, ...]  # external recipients this user shares with normally

    @property
    def roles(self) -> list[str]:
        return [ROLES[self.role]]


@dataclass(frozen=True)
class Label:
    signal: str
    entity: str
    start: dt.datetime
    end: dt.datetime
    kind: str  # attack | near-miss | benign-unusual
    note: str

    def as_dict(self) -> dict[str, Any]:
        return {"signal": self.signal, "entity": self.entity, "start": _iso(self.start), "end": _iso(self.end),
                "kind": self.kind, "note": self.note}


@dataclass
class Simulation:
    start: dt.datetime        # first labelled day
    end: dt.datetime
    warmup_start: dt.datetime
    users: list[User]
    generic: list[tuple[dt.datetime, dict[str, Any]]] = field(default_factory=list)
    keycloak: list[tuple[dt.datetime, dict[str, Any]]] = field(default_factory=list)
    atna: list[tuple[dt.datetime, str]] = field(default_factory=list)
    labels: list[Label] = field(default_factory=list)


def _iso(t: dt.datetime) -> str:
    return t.astimezone(dt.timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _uid(*parts: Any) -> str:
    digest = hashlib.sha256("|".join(str(p) for p in parts).encode()).hexdigest()
    return "2.25." + str(int(digest[:30], 16))


NAMES = ["adams", "baker", "clark", "davis", "evans", "foster", "green", "hall", "irwin", "jones", "king", "lewis",
         "moore", "nolan", "owen", "price", "quinn", "reed", "scott", "turner", "upton", "vance", "walsh", "young",
         "zane"]


def make_users(n: int, rng: random.Random) -> list[User]:
    if n < 8:
        raise PacsguardError(f"--users {n}: at least 8 users are needed for every role and attack")
    admins = max(1, n // 25)
    rads = (n - admins) * 3 // 10
    techs = (n - admins) * 3 // 10
    roles = ["adm"] * admins + ["rad"] * rads + ["tech"] * techs + ["clerk"] * (n - admins - rads - techs)
    users = []
    for i, role in enumerate(roles):
        name = f"{NAMES[i % len(NAMES)]}{i // len(NAMES) or ''}.{role}"
        referrers = tuple(f"dr{rng.randrange(1000)}@clinic{rng.randrange(40)}.example" for _ in range(3)) \
            if role == "rad" else ()
        users.append(User(name, role, rng.choice([7, 8, 9, 13]), rng.random() < 0.2,
                          f"ws-{hashlib.sha256(name.encode()).hexdigest()[:10]}", referrers))
    return users


class Writer:
    """Appends events in the format of the source that would log them."""

    def __init__(self, sim: Simulation, rng: random.Random) -> None:
        self.sim, self.rng, self.seq = sim, rng, 0

    def _id(self) -> str:
        self.seq += 1
        return f"sim-{self.seq}"

    def generic(self, t: dt.datetime, action: str, user: User | str, **fields: Any) -> None:
        name = user.name if isinstance(user, User) else user
        event: dict[str, Any] = {"timestamp": _iso(t), "app": APP, "vendor": "Example Imaging",
                                 "host": "viewer-01.hospital.example", "action": action,
                                 "outcome": fields.pop("outcome", "success"), "id": self._id(), "user": name}
        if isinstance(user, User):
            event["roles"] = user.roles
        event.update({k: v for k, v in fields.items() if v is not None})
        self.sim.generic.append((t, event))

    def login(self, t: dt.datetime, user: User, ip: str, device: str | None = None, ua: str = UA,
              outcome: str = "success") -> None:
        self.generic(t, "user-login", user, source_ip=ip, user_agent=ua, device_id=device or user.device,
                     outcome=outcome, reason="invalid_password" if outcome == "failure" else None)

    def keycloak(self, t: dt.datetime, username: str, ip: str, ok: bool) -> None:
        """A Keycloak event as its JSON console handler prints it (Quarkus JSON logging)."""
        user_id = hashlib.sha256(username.encode()).hexdigest()
        uuid = f"{user_id[:8]}-{user_id[8:12]}-{user_id[12:16]}-{user_id[16:20]}-{user_id[20:32]}"
        if ok:
            message = (f'type="LOGIN", realmId="{KC_REALM}-id", realmName="{KC_REALM}", clientId="pacs-viewer", '
                       f'userId="{uuid}", sessionId="{self._id()}", ipAddress="{ip}", auth_method="openid-connect", '
                       f'auth_type="code", username="{username}"')
            level = "DEBUG"
        else:
            message = (f'type="LOGIN_ERROR", realmId="{KC_REALM}-id", realmName="{KC_REALM}", '
                       f'clientId="pacs-viewer", userId="{uuid}", ipAddress="{ip}", error="invalid_user_credentials", '
                       f'auth_method="openid-connect", auth_type="code", username="{username}"')
            level = "WARN"
        self.seq += 1
        self.sim.keycloak.append((t, {
            "timestamp": t.astimezone(dt.timezone.utc).isoformat(timespec="microseconds"), "sequence": self.seq,
            "loggerClassName": "org.jboss.logging.Logger", "loggerName": "org.keycloak.events", "level": level,
            "message": message, "threadName": "executor-thread-1", "threadId": 41, "mdc": {}, "ndc": "",
            "hostName": "kc-0", "processName": "/usr/lib/jvm/jre-21/bin/java", "processId": 1}))

    def exports(self, t: dt.datetime, user: User, studies: int, spread_minutes: float, tag: str) -> None:
        """`studies` single-study exports spread evenly over `spread_minutes` from t."""
        for i in range(studies):
            at = t + dt.timedelta(minutes=spread_minutes * i / max(1, studies))
            self.generic(at, "study-export", user, studies=[_uid(tag, user.name, at.isoformat(), i)],
                         export={"destination": "USB-MEDIA"}, source_ip=HOSPITAL_IPS[0])

    def dicom_exports(self, t: dt.datetime, user: User, studies: int, spread_minutes: float, tag: str) -> None:
        """`studies` DICOM exports to media spread over `spread_minutes`, as the archive audits them:
        one DICOM "Export" (110106) audit message each, in an RFC 5424 frame. No roles: DICOM has none."""
        for i in range(studies):
            at = t + dt.timedelta(minutes=spread_minutes * i / max(1, studies))
            uid = _uid(tag, user.name, at.isoformat(), i)
            patient = f"SIM-{int(hashlib.sha256(uid.encode()).hexdigest()[:8], 16) % 100000:05d}"
            xml = (f'<?xml version="1.0" encoding="UTF-8"?><AuditMessage><EventIdentification EventActionCode="R" '
                   f'EventDateTime="{_iso(at)}" EventOutcomeIndicator="0"><EventID csd-code="110106" '
                   f'codeSystemName="DCM" originalText="Export"/></EventIdentification>'
                   f'<ActiveParticipant UserID="{user.name}" UserIsRequestor="true" UserTypeCode="1" '
                   f'NetworkAccessPointID="{WORKSTATION_IP}" NetworkAccessPointTypeCode="2"><UserIDTypeCode '
                   f'csd-code="113871" codeSystemName="DCM" originalText="Person ID"/></ActiveParticipant>'
                   f'<ActiveParticipant UserID="MEDIA-1" UserIsRequestor="false" UserTypeCode="2" '
                   f'NetworkAccessPointID="{PACS_HOST}" NetworkAccessPointTypeCode="1"><RoleIDCode csd-code="110152" '
                   f'codeSystemName="DCM" originalText="Destination Role ID"/></ActiveParticipant>'
                   f'<AuditSourceIdentification AuditSourceID="{PACS_AE}"/>'
                   f'<ParticipantObjectIdentification ParticipantObjectID="{patient}^^^HOSP" '
                   f'ParticipantObjectTypeCode="1" ParticipantObjectTypeCodeRole="1"><ParticipantObjectIDTypeCode '
                   f'csd-code="2" codeSystemName="RFC-3881" originalText="Patient Number"/><ParticipantObjectName>'
                   f'SIMULATED^PATIENT{patient[4:]}</ParticipantObjectName></ParticipantObjectIdentification>'
                   f'<ParticipantObjectIdentification ParticipantObjectID="{uid}" ParticipantObjectTypeCode="2" '
                   f'ParticipantObjectTypeCodeRole="3"><ParticipantObjectIDTypeCode csd-code="110180" '
                   f'codeSystemName="DCM" originalText="Study Instance UID"/></ParticipantObjectIdentification>'
                   f'</AuditMessage>')
            self.sim.atna.append((at, f"<85>1 {_iso(at)} {PACS_HOST} {PACS_AE} - IHE+RFC-3881 - {xml}"))

    def share(self, t: dt.datetime, user: User, recipient: str, external: bool = True) -> None:
        self.generic(t, "share-create", user, share={"id": self._id(), "recipients": [recipient],
                                                     "external": external},
                     studies=[_uid("share", user.name, t.isoformat())], source_ip=HOSPITAL_IPS[0])


# ------------------------------------------------------------------ normal work


def normal_day(w: Writer, user: User, day: dt.datetime, rng: random.Random, quiet: bool = False) -> None:
    """One working day: login (sometimes after a typo), reading, the role's usual work (not when quiet)."""
    if day.weekday() >= 5 and not user.weekend:
        return
    start = day + dt.timedelta(hours=user.shift_start, minutes=rng.randrange(0, 40))
    ip = rng.choice(HOSPITAL_IPS)
    if user.role == "clerk":
        # clerks sign in through Keycloak's login page: its event log is the source
        if rng.random() < 0.1 and not quiet:
            w.keycloak(start - dt.timedelta(seconds=30), user.name, ip, ok=False)
        w.keycloak(start, user.name, ip, ok=True)
    else:
        if rng.random() < 0.1 and not quiet:
            w.login(start - dt.timedelta(seconds=30), user, ip, outcome="failure")
        w.login(start, user, ip)
    for _ in range(rng.randrange(5, 15)):
        t = start + dt.timedelta(minutes=rng.randrange(5, 460))
        w.generic(t, "study-view", user, studies=[_uid("view", user.name, t.isoformat())], source_ip=ip)
    if quiet:
        return
    if user.role == "rad":
        # heavy but normal: about 10 studies an hour for two hours, every working day
        for h in (1, 4):
            w.exports(start + dt.timedelta(hours=h, minutes=rng.randrange(0, 20)), user,
                      rng.randrange(8, 13), 55, "rad")
        for _ in range(rng.randrange(0, 3)):
            w.share(start + dt.timedelta(minutes=rng.randrange(30, 400)), user, rng.choice(user.referrers))
    elif user.role == "tech":
        w.generic(start + dt.timedelta(minutes=20), "study-import", user,
                  studies=[_uid("import", user.name, day.isoformat())], source_ip=ip)
        if rng.random() < 0.3:
            w.dicom_exports(start + dt.timedelta(hours=2), user, 1, 1, "tech")
    elif user.role == "adm" and rng.random() < 0.3:
        w.generic(start + dt.timedelta(hours=1), "user-update", user, target_user=rng.choice(NAMES) + ".clerk")
    if user.role == "rad" and rng.random() < 0.3:
        # evening reading from home: the same laptop, the home address (same country)
        w.login(day + dt.timedelta(hours=20, minutes=rng.randrange(0, 50)), user, HOME_IP)


# ------------------------------------------------------------------ scenarios


Scenario = Callable[[Writer, dt.datetime, dict[str, User]], None]


def _label(w: Writer, signal: str, entity: str, t: dt.datetime, minutes: float, kind: str, note: str) -> None:
    w.sim.labels.append(Label(signal, entity, t, t + dt.timedelta(minutes=minutes), kind, note))


def s_1a(w: Writer, t: dt.datetime, u: dict[str, User]) -> None:
    for i in range(10):
        w.keycloak(t + dt.timedelta(seconds=30 * i), u["clerk"].name, ATTACK_IP, ok=False)
    _label(w, "1a", u["clerk"].name, t, 5, "attack", "10 failed logins in 5 min (Keycloak)")


def s_1a_near(w: Writer, t: dt.datetime, u: dict[str, User]) -> None:
    for i in range(7):
        w.keycloak(t + dt.timedelta(seconds=40 * i), u["clerk"].name, HOSPITAL_IPS[1], ok=False)
    _label(w, "1a", u["clerk"].name, t, 5, "near-miss", "7 failed logins (threshold 8)")


def s_1b(w: Writer, t: dt.datetime, u: dict[str, User]) -> None:
    for i in range(25):
        w.keycloak(t + dt.timedelta(seconds=15 * i), f"{NAMES[i % len(NAMES)]}.guess{i}", SPRAY_IP, ok=False)
    _label(w, "1b", SPRAY_IP, t, 7, "attack", "password spray: 25 failures from one IP, one per account")


def s_1b_near(w: Writer, t: dt.datetime, u: dict[str, User]) -> None:
    for i in range(19):
        w.keycloak(t + dt.timedelta(seconds=20 * i), f"{NAMES[i % len(NAMES)]}.typo{i}", CLINIC_IP, ok=False)
    _label(w, "1b", CLINIC_IP, t, 7, "near-miss", "19 failures from one IP (threshold 20)")


def s_1c(w: Writer, t: dt.datetime, u: dict[str, User]) -> None:
    user = u["tech"]
    for i in range(6):
        w.login(t + dt.timedelta(seconds=30 * i), user, ATTACK_IP, device=user.device, outcome="failure")
    w.login(t + dt.timedelta(minutes=4), user, HOSPITAL_IPS[0])
    _label(w, "1c", user.name, t, 5, "attack", "6 failures then a success")


def s_1c_near(w: Writer, t: dt.datetime, u: dict[str, User]) -> None:
    user = u["tech"]
    for i in range(4):
        w.login(t + dt.timedelta(seconds=30 * i), user, HOSPITAL_IPS[0], outcome="failure")
    w.login(t + dt.timedelta(minutes=3), user, HOSPITAL_IPS[0])
    _label(w, "1c", user.name, t, 5, "near-miss", "4 failures then a success (threshold 5)")


def s_2a(w: Writer, t: dt.datetime, u: dict[str, User]) -> None:
    user = u["rad"]  # stolen password used from abroad, through the user's own remote desktop (same device id)
    w.login(t, user, ATTACK_IP)
    _label(w, "2a", user.name, t, 1, "attack", "login from a new country (CN)")


def s_2a_travel(w: Writer, t: dt.datetime, u: dict[str, User]) -> None:
    user = u["rad"]
    w.login(t, user, TRAVEL_IP)
    _label(w, "2a", user.name, t, 1, "benign-unusual", "legitimate travel: congress in the US, own laptop")


def s_2a_near(w: Writer, t: dt.datetime, u: dict[str, User]) -> None:
    user = u["tech"]  # went to SE during the warm-up (see warmup_travel): a returning country
    w.login(t, user, RETURN_IP)
    _label(w, "2a", user.name, t, 1, "near-miss", "login from a country seen before (SE)")


def s_2b(w: Writer, t: dt.datetime, u: dict[str, User]) -> None:
    user = u["tech"]  # a user who signs in through the viewer, which reports the device
    w.login(t, user, HOSPITAL_IPS[0], device="dev-attacker-2b", ua=ATTACK_UA)
    _label(w, "2b", user.name, t, 1, "attack", "login from a new device")


def s_3(w: Writer, t: dt.datetime, u: dict[str, User]) -> None:
    admin = u["adm"]
    w.generic(t, "role-grant", admin, target_user=u["clerk"].name, roles_changed=["pacs-admin"],
              source_ip=HOSPITAL_IPS[0])
    _label(w, "3", admin.name, t, 1, "attack", "pacs-admin granted to a clerk")
    w.generic(t + dt.timedelta(minutes=2), "user-create", admin, target_user="svc-backup", source_ip=HOSPITAL_IPS[0])


def s_3_near(w: Writer, t: dt.datetime, u: dict[str, User]) -> None:
    admin = u["adm"]
    w.generic(t, "role-revoke", admin, target_user=u["clerk"].name, roles_changed=["pacs-admin"],
              source_ip=HOSPITAL_IPS[0])
    _label(w, "3", admin.name, t, 1, "near-miss", "a role revoked (not a grant)")


def s_4a(w: Writer, t: dt.datetime, u: dict[str, User]) -> None:
    user = u["rad"]
    w.exports(t, user, 20, 20, "attack4a")
    _label(w, "4a", user.name, t, 20, "attack", "20 studies in 20 min (radiologist, within the baseline)")


def s_4a_near(w: Writer, t: dt.datetime, u: dict[str, User]) -> None:
    user = u["rad"]
    w.exports(t, user, 14, 25, "near4a")
    _label(w, "4a", user.name, t, 25, "near-miss", "14 studies in 25 min (threshold 15)")


def s_4a_admin(w: Writer, t: dt.datetime, u: dict[str, User]) -> None:
    admin = u["adm"]
    w.dicom_exports(t, admin, 40, 25, "admin4a")
    _label(w, "4a", admin.name, t, 25, "near-miss", "an administrator exports 40 studies (admins are exempt)")


def s_4b(w: Writer, t: dt.datetime, u: dict[str, User]) -> None:
    user = u["tech"]
    w.dicom_exports(t, user, 12, 55, "attack4b")
    _label(w, "4b", user.name, t, 55, "attack", "12 studies in an hour for a user who exports about 1")


def s_4b_near(w: Writer, t: dt.datetime, u: dict[str, User]) -> None:
    user = u["tech"]
    w.dicom_exports(t, user, 4, 50, "near4b")
    _label(w, "4b", user.name, t, 50, "near-miss", "4 studies in an hour (floor 5)")


def s_4c(w: Writer, t: dt.datetime, u: dict[str, User]) -> None:
    user = u["rad"]
    w.login(t, user, HOSPITAL_IPS[1], device="dev-attacker-4c", ua=ATTACK_UA)
    _label(w, "2b", user.name, t, 1, "attack", "new device before an export (4c chain)")
    w.exports(t + dt.timedelta(minutes=20), user, 16, 15, "attack4c")
    _label(w, "4a", user.name, t + dt.timedelta(minutes=20), 15, "attack", "16 studies in 15 min (4c chain)")
    _label(w, "4c", user.name, t + dt.timedelta(minutes=20), 15, "attack", "bulk export 20 min after a new device")


def s_5a(w: Writer, t: dt.datetime, u: dict[str, User]) -> None:
    user = u["clerk"]
    for i in range(12):
        w.share(t + dt.timedelta(minutes=2 * i), user, f"colleague{i}@hospital.example", external=False)
    _label(w, "5a", user.name, t, 24, "attack", "12 share links in 24 min")


def s_5a_near(w: Writer, t: dt.datetime, u: dict[str, User]) -> None:
    user = u["clerk"]
    for i in range(9):
        w.share(t + dt.timedelta(minutes=3 * i), user, f"colleague{i}@hospital.example", external=False)
    _label(w, "5a", user.name, t, 27, "near-miss", "9 share links in 27 min (threshold 10)")


def s_5b(w: Writer, t: dt.datetime, u: dict[str, User]) -> None:
    user = u["rad"]
    for i in range(6):
        w.share(t + dt.timedelta(minutes=40 * i), user, f"x{i}@freemail{i}.example")
    _label(w, "5b", user.name, t, 200, "attack", "6 new external recipients in 3 h 20")


def s_5b_near(w: Writer, t: dt.datetime, u: dict[str, User]) -> None:
    user = u["rad"]
    for i in range(4):
        w.share(t + dt.timedelta(minutes=40 * i), user, f"new{i}@partner{i}.example")
    _label(w, "5b", user.name, t, 120, "near-miss", "4 new external recipients (threshold 5)")


# (scenario, roles it needs: distinct users picked per scenario)
SCENARIOS: list[tuple[Scenario, tuple[str, ...]]] = [
    (s_1a, ("clerk",)), (s_1b, ()), (s_1c, ("tech",)), (s_2a, ("rad",)), (s_2b, ("tech",)), (s_3, ("adm", "clerk")),
    (s_4a, ("rad",)), (s_4b, ("tech",)), (s_4c, ("rad",)), (s_5a, ("clerk",)), (s_5b, ("rad",)),
    (s_1a_near, ("clerk",)), (s_1b_near, ()), (s_1c_near, ("tech",)), (s_2a_near, ("tech",)),
    (s_2a_travel, ("rad",)), (s_3_near, ("adm", "clerk")), (s_4a_near, ("rad",)), (s_4a_admin, ("adm",)),
    (s_4b_near, ("tech",)), (s_5a_near, ("clerk",)), (s_5b_near, ("rad",)),
]
# Users whose warm-up history a scenario relies on: 4b's attacker exported about one study a week,
# 2a's near-miss user had been to SE.
NEEDS_LOW_EXPORTER = {s_4b, s_4b_near}
NEEDS_SE_HISTORY = {s_2a_near}


def simulate(days: int, users: int, seed: int, end: dt.datetime, warmup_days: int = 7) -> Simulation:
    if days < 2:
        raise PacsguardError(f"--days {days}: at least 2 days are needed")
    rng = random.Random(seed)
    end = end.astimezone(dt.timezone.utc).replace(second=0, microsecond=0)
    # the labelled period is exactly `days` x 24 h back from the end; normal work runs on calendar days
    start = end - dt.timedelta(days=days)
    midnight = start.replace(hour=0, minute=0)
    sim = Simulation(start, end, start - dt.timedelta(days=warmup_days), make_users(users, rng))
    w = Writer(sim, rng)
    by_role: dict[str, list[User]] = {}
    for user in sim.users:
        by_role.setdefault(user.role, []).append(user)
    for members in by_role.values():
        rng.shuffle(members)
    # Slots: every 90 minutes from 07:00 on the labelled days (not today's future), one scenario each.
    slots = [midnight + dt.timedelta(days=d, hours=FIRST_SLOT_HOUR, minutes=SLOT_MINUTES * k)
             for k in range(9) for d in range(days + 1)]
    slots = [s for s in slots if s >= start and s + dt.timedelta(hours=4) <= end]
    if len(slots) < len(SCENARIOS):
        raise PacsguardError(f"{days} day(s) ending at {_iso(end)} leave {len(slots)} time slots for "
                             f"{len(SCENARIOS)} scenarios: simulate more days")
    # on the first warm-up day everyone shares once with each usual recipient: they are known, not new, later
    for user in sim.users:
        for i, recipient in enumerate(user.referrers):
            w.share(sim.warmup_start + dt.timedelta(hours=12, minutes=10 * i), user, recipient)
    turn: dict[str, int] = {}
    busy: set[tuple[str, dt.date]] = set()
    for (scenario, needs), slot in zip(SCENARIOS, slots, strict=False):
        picked: dict[str, User] = {}
        for role in needs:
            pool = by_role[role]
            picked[role] = pool[turn.get(role, 0) % len(pool)]
            turn[role] = turn.get(role, 0) + 1
        if scenario in NEEDS_LOW_EXPORTER:
            for d in range(warmup_days):
                w.dicom_exports(sim.warmup_start + dt.timedelta(days=d, hours=11), picked["tech"], 1, 1, "weekly")
        if scenario in NEEDS_SE_HISTORY:
            w.login(sim.warmup_start + dt.timedelta(days=1, hours=18), picked["tech"], RETURN_IP)
        scenario(w, slot, picked)
        # the scenario's users do not also export or share as usual that day: a near-miss stays near
        busy |= {(p.name, slot.date()) for p in picked.values()}
    for day_index in range(warmup_days + days + 1):
        day = midnight - dt.timedelta(days=warmup_days - day_index)
        for user in sim.users:
            normal_day(w, user, day, rng, quiet=(user.name, day.date()) in busy)
    for events in (sim.generic, sim.keycloak, sim.atna):
        events.sort(key=lambda e: e[0])
        events[:] = [e for e in events if e[0] <= end]
    return sim


def directory_csv(sim: Simulation) -> str:
    """The hospital's accounts as the directory job's CSV export (docs/baselines.md, directory)."""
    text = io.StringIO()
    out = csv.writer(text, lineterminator="\n")
    out.writerow(["username", "email", "roles", "enabled", "created"])
    for user in sim.users:
        out.writerow([user.name, f"{user.name}@hospital.example", ";".join(user.roles), "true",
                      _iso(sim.warmup_start - dt.timedelta(days=90))])
    return text.getvalue()


def write(sim: Simulation, out: Path, seed: int) -> dict[str, Any]:
    out.mkdir(parents=True, exist_ok=True)
    files = {"generic": out / "viewer-audit.jsonl", "keycloak": out / "keycloak.log", "atna": out / "dicom-audit.log",
             "directory": out / "directory.csv", "labels": out / "labels.jsonl"}
    with files["generic"].open("w") as fh:
        for _, event in sim.generic:
            fh.write(json.dumps(event, separators=(",", ":")) + "\n")
    with files["keycloak"].open("w") as fh:
        for _, record in sim.keycloak:
            fh.write(json.dumps(record, separators=(",", ":")) + "\n")
    with files["atna"].open("w") as fh:
        fh.writelines(line + "\n" for _, line in sim.atna)
    files["directory"].write_text(directory_csv(sim))
    with files["labels"].open("w") as fh:
        for label in sim.labels:
            fh.write(json.dumps(label.as_dict()) + "\n")
    meta = {"seed": seed, "from": _iso(sim.start), "to": _iso(sim.end), "warmup_from": _iso(sim.warmup_start),
            "users": len(sim.users), "days": round((sim.end - sim.start).total_seconds() / 86400, 3),
            "roles": {r: sum(1 for u in sim.users if u.role == r) for r in ROLES},
            "events": {"generic": len(sim.generic), "keycloak": len(sim.keycloak), "atna": len(sim.atna)},
            "labels": {k: sum(1 for lb in sim.labels if lb.kind == k) for k in ("attack", "near-miss", "benign-unusual")},
            "files": {k: str(v) for k, v in files.items()}}
    (out / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")
    return meta


def ship(cluster: Cluster, settings: Settings, out: Path, meta: dict[str, Any], failures_key: bytes,
         timeout: float = 900) -> dict[str, Any]:
    """Send the written files through the collector's file inputs and wait until every event is settled."""
    from pacsguard.collector.sender import SenderConfig
    from pacsguard.collector.service import CollectorConfig, CollectorThread

    expected = sum(meta["events"].values())
    config = CollectorConfig(state_dir=out / "collector-state",
                             files=((Path(meta["files"]["generic"]), "json"),
                                    (Path(meta["files"]["keycloak"]), "keycloak"),
                                    (Path(meta["files"]["atna"]), "syslog")),
                             sender=SenderConfig(batch_size=1000, flush_interval=0.2), progress_interval=0,
                             failures_key=failures_key)
    thread = CollectorThread(config, cluster, settings).start()
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            snap = thread.counters.snapshot()
            settled = sum(snap[k] for k in ("indexed", "failed", "spooled", "rejected"))
            if snap["received"] >= expected and settled >= expected:
                break
            time.sleep(0.5)
        else:
            raise PacsguardError(f"shipping stopped short: {thread.counters.snapshot()} of {expected} events")
    finally:
        final = thread.stop()
    cluster.request("POST", f"/{settings.index('events_data_stream')},{settings.index('failures')}/_refresh",
                    params={"ignore_unavailable": "true"})
    # The hospital's accounts and roles: DICOM exports carry none, the rules read them here.
    from pacsguard.jobs.directory import read_csv, run_directory

    directory = run_directory(cluster, settings, accounts=read_csv(Path(meta["files"]["directory"])))
    return {**final, "directory_accounts": directory.written}
