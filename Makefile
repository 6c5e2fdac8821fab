# The two set-up commands (README): `make up` runs the main job on a local
# OpenSearch node the project builds and starts; `make test` runs the tests.
PYTHON ?= python3
PIP := $(PYTHON) -m pip --disable-pip-version-check -q
# pip runs one at a time, and only when pyproject.toml changed or the package
# is not importable from this checkout: two `make test` runs started together share the Python
# environment, and reinstalling the package while the other run's tests start
# subprocesses would pull it away from under them.
DEPS_STAMP := .make-deps.stamp

.PHONY: deps up test down

deps:
	flock /tmp/pacsguard-make-deps.lock sh -c '[ $(DEPS_STAMP) -nt pyproject.toml ] && $(PYTHON) -c "import pacsguard, sys; sys.exit(not pacsguard.__file__.startswith(\"$(CURDIR)/\"))" 2>/dev/null || { $(PIP) install -e ".[test,docker]" && touch $(DEPS_STAMP); }'

up: deps
	pacsguard up

# The whole suite on the default node (2.19.6), then the `both_lines` cluster tests
# (tests/cluster/conftest.py) again on the 3.x line; each run prints its own summary,
# and the target fails if either failed.
LINE3_VERSION := 3.8.0
test: deps
	$(PYTHON) -m pytest; whole=$$?; \
	PACSGUARD_TEST_VERSION=$(LINE3_VERSION) $(PYTHON) -m pytest -m both_lines; line3=$$?; \
	exit $$(( whole != 0 ? whole : line3 ))

down:
	pacsguard down
