# The README's commands. Each target installs what it needs first (Debian/Ubuntu; sudo when not
# root), so a fresh machine with only Rust works.

SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
# The official Python SDK used by the interop test (tests/sdk_interop.rs).
SDK_VENV := $(CURDIR)/target/sdk-venv
ASSEMBLYAI_SDK := assemblyai==1.8.2
LISTEN ?= 127.0.0.1:8080
KEY ?= local-test-key

.PHONY: deps test-deps sdk-venv demo emulate test lint

# Installs the packages in $$missing, if any (the recipes' probes fill it).
APT_MISSING = if [ -n "$$missing" ]; then \
		echo "installing:$$missing"; \
		$(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq $$missing; \
	fi
# The same for $$lean, without the recommended packages (PulseAudio's recommend a desktop).
APT_MISSING_LEAN = if [ -n "$$lean" ]; then \
		echo "installing (no recommends):$$lean"; \
		$(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq --no-install-recommends $$lean; \
	fi

## What building and the demo need: the ALSA headers for the microphone (cpal) and pkg-config
## to find them, and the lint components.
deps:
	@if command -v rustup >/dev/null; then rustup component add rustfmt clippy >/dev/null 2>&1 || true; fi
	@missing=""; \
	pkg-config --exists alsa 2>/dev/null || missing="$$missing libasound2-dev pkg-config"; \
	$(APT_MISSING)

## What the tests need on top: openssl for the TLS tests' certificates, python3-venv for the SDK
## interop test, tmux for the dashboard's terminal test, redis-server for the token server's
## shared-limits tests (they start their own instances on free loopback ports; the package's own
## daemon is not used), chromium for the browser client's tests (headless, driven over the
## DevTools protocol) and nodejs for its unit tests. PulseAudio for the system-audio tests
## (tests/audio_pulse.rs start their own server on a temporary runtime directory): the server,
## its tools (parec, pactl, paplay) and ALSA's pulse plugin (the microphone path through
## `--device alsa:pulse`); only what they need, not the recommended desktop packages.
test-deps: deps
	@missing=""; \
	command -v openssl >/dev/null || missing="$$missing openssl"; \
	python3 -c 'import venv, ensurepip' >/dev/null 2>&1 || missing="$$missing python3 python3-venv"; \
	command -v tmux >/dev/null || missing="$$missing tmux"; \
	command -v redis-server >/dev/null || missing="$$missing redis-server"; \
	command -v chromium >/dev/null || missing="$$missing chromium"; \
	command -v node >/dev/null || missing="$$missing nodejs"; \
	$(APT_MISSING); \
	lean=""; \
	command -v pulseaudio >/dev/null || lean="$$lean pulseaudio"; \
	command -v parec >/dev/null || lean="$$lean pulseaudio-utils"; \
	[ -e /usr/lib/x86_64-linux-gnu/alsa-lib/libasound_module_pcm_pulse.so ] \
		|| dpkg -s libasound2-plugins >/dev/null 2>&1 || lean="$$lean libasound2-plugins"; \
	$(APT_MISSING_LEAN)

sdk-venv: test-deps
	@[ -x $(SDK_VENV)/bin/python ] || python3 -m venv $(SDK_VENV)
	@$(SDK_VENV)/bin/python -c 'import assemblyai' 2>/dev/null || \
		$(SDK_VENV)/bin/pip install -q $(ASSEMBLYAI_SDK)

## The offline demo: the dashboard streaming a bundled recording through the in-process
## emulator, with a session rotation in the first minute (q to quit).
demo: deps
	cargo run --release -- demo

## Run the local AssemblyAI v3 emulator (Ctrl-C to stop).
emulate: deps
	cargo run --release -- emulate --listen $(LISTEN) --api-key $(KEY)

## The whole test suite.
test: test-deps sdk-venv
	@if cargo nextest --version >/dev/null 2>&1; then \
		AAI_LIVE_PYTHON=$(SDK_VENV)/bin/python cargo nextest run --no-fail-fast; \
	else \
		AAI_LIVE_PYTHON=$(SDK_VENV)/bin/python cargo test --no-fail-fast; \
	fi

lint: deps
	cargo fmt --check
	cargo clippy --all-targets -- -D warnings
