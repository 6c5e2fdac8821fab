# The two set-up commands (README): `make up` runs the main job on a local
# OpenSearch node the project builds and starts; `make test` runs the tests.
PYTHON ?= python3
PIP := $(PYTHON) -m pip --disable-pip-version-check -q

.PHONY: deps up test down

deps:
	$(PIP) install -e ".[test,docker]"

up: deps
	pacsguard up

test: deps
	$(PYTHON) -m pytest

down:
	pacsguard down
