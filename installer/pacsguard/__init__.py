"""pacsguard: a security-monitoring pack for PACS audit trails on OpenSearch."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("pacsguard")
except PackageNotFoundError:  # running from a source checkout without install
    __version__ = "0.0.0+source"
