# The two Quickstart commands: `make run` and `make test`. Both install what they need into .venv.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
CONFIG ?= hub.toml
PLUGINS := $(wildcard plugins/*/setup.cfg)
PLUGIN_DIRS := $(patsubst %/setup.cfg,%,$(PLUGINS))

.PHONY: run secrets test install lock bench chaos clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# Installs the hub and every bundled plugin, with their test extras, at exactly the versions in
# requirements.lock (again only when it or a setup.cfg changes). `make lock` re-resolves the lock.
STAMP := $(VENV)/.installed
LOCK  := requirements.lock
$(STAMP): setup.cfg $(PLUGINS) $(LOCK) | $(BIN)/python
	$(BIN)/pip install --quiet -c $(LOCK) -e ".[test]" $(foreach p,$(PLUGIN_DIRS),-e "./$(p)[test]")
	touch $@

install: $(STAMP)

# Re-resolves requirements.lock (pip-tools' pip-compile) from requirements.in: every third-party
# distribution the hub, its plugins and their tests install, at one exact version each. Our own
# editable packages are dropped from it, so it works as a pip constraints file.
lock: | $(BIN)/python
	$(BIN)/pip install --quiet "pip-tools>=7.4,<8"
	$(BIN)/pip-compile --quiet --strip-extras --allow-unsafe --no-emit-index-url --no-emit-find-links \
	  --annotation-style=line --output-file $(LOCK).tmp requirements.in
	{ echo "# Exact versions for deployments and CI: made by \`make lock\` (pip-compile), used by \`make install\`."; \
	  grep -v '^-e ' $(LOCK).tmp; } > $(LOCK)
	rm -f $(LOCK).tmp

# The webhook secret and the dashboard's admin token, made once into .webhook-secret and
# .admin-token (git-ignored, readable by their owner only) unless the environment sets them.
# Each is printed the one time it is made; every later run says only where it is.
secrets:
	@umask 077; test -n "$$HMS_WEBHOOK_SECRET" || test -s .webhook-secret || { \
	  $(PYTHON) -c "import secrets; print('whsec_' + secrets.token_urlsafe(32))" > .webhook-secret && \
	  echo "made the webhook secret (the assistant's webhook_secret): $$(cat .webhook-secret)"; }
	@umask 077; test -n "$$HUB_ADMIN_TOKEN" || test -s .admin-token || { \
	  $(PYTHON) -c "import secrets; print(secrets.token_urlsafe(24))" > .admin-token && \
	  echo "made the dashboard's admin token: $$(cat .admin-token)"; }

# The configuration the commands find by themselves (./hub.toml), made once from the example.
$(CONFIG):
	cp config.example.toml $@

# Runs the hub on its embedded defaults (SQLite file, in-process dispatcher) on 127.0.0.1:8080.
# `serve` applies the store's schema migrations first.
run: install secrets $(CONFIG)
	@test -n "$$HMS_WEBHOOK_SECRET" || echo "webhook secret (the assistant's webhook_secret): in $(CURDIR)/.webhook-secret"
	@test -n "$$HUB_ADMIN_TOKEN" || echo "dashboard: http://127.0.0.1:8080/  admin token: in $(CURDIR)/.admin-token"
	HMS_WEBHOOK_SECRET="$${HMS_WEBHOOK_SECRET:-$$(cat .webhook-secret)}" \
	HUB_ADMIN_TOKEN="$${HUB_ADMIN_TOKEN:-$$(cat .admin-token)}" \
	  $(BIN)/sovereign-hub serve -c $(CONFIG)

# Runs the whole test suite (core and every plugin).
test: install
	$(BIN)/python -m pytest -q $(PYTEST_ARGS)

bench: install
	$(BIN)/python bench/ingest.py

chaos: install
	$(BIN)/python bench/chaos.py

clean:
	rm -rf $(VENV) build *.egg-info hub.db hub.db-wal hub.db-shm calls.jsonl
