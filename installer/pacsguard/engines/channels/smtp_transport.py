"""E-mail delivery over SMTP: STARTTLS or implicit TLS, AUTH, one plain-text message per attempt.

The Message-ID is derived from the delivery id, so a message the server took but whose answer
we never saw (and therefore sent again) is the same message to every mail client, which shows
it once. Recipients the server refused for now (4xx) are retried alone; recipients it took are
not sent to again.
"""

from __future__ import annotations

import email.utils
import smtplib
import ssl
from email.message import EmailMessage

from pydantic import SecretStr

from pacsguard import __version__
from pacsguard.engines.channels.attempt import AttemptOutcome, Scrubber, Verdict, one_line
from pacsguard.engines.channels.http_transport import describe_network_error
from pacsguard.engines.channels.message import AlertMessage


class _Refused(Exception):
    """A server that will not do what the settings require (e.g. no STARTTLS): never downgrade."""


def message_id(delivery_id: str, from_address: str) -> str:
    return f"<pacsguard.{delivery_id}@{from_address.rpartition('@')[2]}>"


def build_email(message: AlertMessage, *, delivery_id: str, from_address: str, recipients: list[str]) -> EmailMessage:
    mail = EmailMessage()
    mail["Subject"] = message.one_line_subject()
    mail["From"] = from_address
    mail["To"] = ", ".join(recipients)
    mail["Date"] = email.utils.formatdate(usegmt=True)
    mail["Message-ID"] = message_id(delivery_id, from_address)
    mail["Auto-Submitted"] = "auto-generated"  # RFC 3834: no vacation replies to the alert sender
    mail["X-Mailer"] = f"pacsguard/{__version__}"
    mail.set_content(message.text)
    return mail


def _code_verdict(code: int) -> Verdict:
    """SMTP: 4xx means try again later, 5xx means this will not work as configured."""
    return "permanent" if 500 <= code < 600 else "transient"


class SmtpTransport:
    def __init__(self, *, host: str, port: int, security: str, context: ssl.SSLContext, username: str | None,
                 password: SecretStr | None, from_address: str, recipients: list[str], scrub: Scrubber) -> None:
        self.host, self.port, self.security, self.context = host, port, security, context
        self.username, self.password = username, password
        self.from_address = from_address
        self.recipients = list(recipients)
        self.pending = list(recipients)             # not yet accepted by the server
        self.refused: dict[str, str] = {}            # permanently refused: address -> server's reason
        self.scrub = scrub
        self.where = f"{host}:{port}"

    def attempt(self, message: AlertMessage, delivery_id: str, attempt: int, timeout: float) -> AttemptOutcome:
        mail = build_email(message, delivery_id=delivery_id, from_address=self.from_address,
                           recipients=self.recipients)
        try:
            with self._session(timeout) as smtp:
                if self.username is not None:
                    smtp.login(self.username, self.password.get_secret_value() if self.password else "")
                refused = smtp.send_message(mail, from_addr=self.from_address, to_addrs=self.pending)
            return self._after_send(refused)
        except smtplib.SMTPRecipientsRefused as exc:  # every pending recipient refused
            return self._after_send(exc.recipients)
        except smtplib.SMTPAuthenticationError as exc:
            said = self._said(exc.smtp_error)
            return AttemptOutcome(_code_verdict(exc.smtp_code), f"SMTP {exc.smtp_code}",
                                  f"{self.where}: authentication failed for user {self.username!r}: "
                                  f"{exc.smtp_code} {said} (check the channel's password_env/password_file)")
        except smtplib.SMTPResponseException as exc:  # sender refused, data refused, HELO refused, ...
            return AttemptOutcome(_code_verdict(exc.smtp_code), f"SMTP {exc.smtp_code}",
                                  f"{self.where} answered {exc.smtp_code} {self._said(exc.smtp_error)}")
        except _Refused as exc:
            return AttemptOutcome("permanent", "refused by policy", f"{self.where}: {exc}")
        except smtplib.SMTPNotSupportedError as exc:
            return AttemptOutcome("permanent", "not supported", f"{self.where}: {self.scrub(str(exc))}")
        except smtplib.SMTPServerDisconnected as exc:
            return AttemptOutcome("transient", "disconnected", f"{self.where}: {self.scrub(str(exc)) or 'closed'}")
        except ssl.SSLCertVerificationError as exc:
            return AttemptOutcome("permanent", "TLS certificate not trusted", self.scrub(
                f"{self.where}: {exc.verify_message or exc} (set the channel's ca_bundle for a private CA)"))
        except smtplib.SMTPException as exc:  # e.g. "No suitable authentication method found."
            return AttemptOutcome("permanent", "SMTP error", f"{self.where}: {self.scrub(str(exc))}")
        except OSError as exc:  # refused, timed out, reset, TLS handshake broken: the network, try again
            text = describe_network_error(exc)
            return AttemptOutcome("transient", self.scrub(one_line(text, 80)), f"{self.where}: {self.scrub(text)}")

    def _session(self, timeout: float) -> smtplib.SMTP:
        if self.security == "tls":
            return smtplib.SMTP_SSL(self.host, self.port, timeout=timeout, context=self.context)
        smtp = smtplib.SMTP(self.host, self.port, timeout=timeout)
        if self.security == "starttls":
            try:
                smtp.ehlo()
                if not smtp.has_extn("starttls"):
                    raise _Refused("server does not offer STARTTLS; not sending in clear text "
                                   "(security: starttls)")
                smtp.starttls(context=self.context)
                smtp.ehlo()
            except BaseException:
                smtp.close()
                raise
        return smtp

    def _after_send(self, refused: dict[str, tuple[int, bytes]]) -> AttemptOutcome:
        retry_later = []
        for address, (code, said) in refused.items():
            if _code_verdict(code) == "permanent":
                self.refused[address] = f"{code} {self._said(said)}"
            else:
                retry_later.append(address)
        self.pending = retry_later
        if retry_later:
            return AttemptOutcome("transient", "SMTP recipients deferred",
                                  f"{self.where} deferred {', '.join(retry_later)}")
        if len(self.refused) == len(self.recipients):
            return AttemptOutcome("permanent", "SMTP recipients refused", self.refusals())
        got = len(self.recipients) - len(self.refused)
        detail = f"accepted by {self.where} for {got} of {len(self.recipients)} recipients"
        return AttemptOutcome("delivered", "SMTP 250", detail + (f"; {self.refusals()}" if self.refused else ""))

    def refusals(self) -> str:
        return "refused: " + "; ".join(f"{a} ({why})" for a, why in self.refused.items())

    def _said(self, raw: bytes | str) -> str:
        text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(raw)
        return self.scrub(one_line(text, 200))
