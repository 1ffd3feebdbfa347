# Development entry points. `make demo` and `make test` work on a fresh machine: they set up what is missing.
# Robot installs use colcon instead (README).
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := $(CURDIR)/.venv
PY := $(VENV)/bin/python
BUILD := $(CURDIR)/build
STAMP := $(VENV)/.stamps

# Environment every command of ours runs in: ROS from the venv's wheels, traffic confined to this machine,
# Fast DDS shared memory for images, the installed package (not the source tree) on sys.path.
RUN_ENV := AMENT_PREFIX_PATH=$(VENV) \
	ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST \
	RMW_IMPLEMENTATION=rmw_fastrtps_cpp \
	FASTRTPS_DEFAULT_PROFILES_FILE=$(CURDIR)/config/fastdds_shm.xml \
	FASTDDS_DEFAULT_PROFILES_FILE=$(CURDIR)/config/fastdds_shm.xml \
	MUJOCO_GL=$${MUJOCO_GL:-egl} \
	PYTHONSAFEPATH=1 \
	COSMOS_POLICY_ROS_SOURCE=$(CURDIR)

CMAKE_ARGS := -DCMAKE_PREFIX_PATH=$(VENV) -DCMAKE_INSTALL_PREFIX=$(VENV) \
	-DPython3_EXECUTABLE=$(PY) -DPYTHON_EXECUTABLE=$(PY) -DBUILD_TESTING=OFF \
	-DCMAKE_BUILD_TYPE=Release

PYTEST_ARGS ?=
TEST_WORKERS ?= 2

.PHONY: setup build locked-build test demo bench clean distclean help
help:
	@echo "make demo   - run one simulated ALOHA episode with the embedded default checkpoint"
	@echo "make test   - set up what is missing, build, run the whole test suite"
	@echo "make setup  - create .venv with torch, ROS 2 Jazzy wheels, model stack; build messages"
	@echo "make build  - (re)build and install msg/ and the Python package into .venv (incremental)"
	@echo "make bench  - run the benchmarks and rewrite BENCHMARKS.md"

setup: $(STAMP)/interbotix_msgs
	@echo "setup complete: $(VENV)"

$(STAMP)/system:
	@bash scripts/check_system_deps.sh
	@mkdir -p $(STAMP) && touch $@

$(STAMP)/pip: $(STAMP)/system requirements/ros.txt requirements/core.txt requirements/sim.txt requirements/test.txt requirements/lock.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@mkdir -p $(STAMP)
	@echo "[setup] installing Python packages into $(VENV) (torch CPU, ROS 2 Jazzy wheels, model stack, MuJoCo)"
	@$(PY) -m pip install -q --disable-pip-version-check torch==2.13.0
	@$(PY) -m pip install -q --disable-pip-version-check -c requirements/lock.txt \
		-r requirements/ros.txt -r requirements/core.txt -r requirements/sim.txt -r requirements/test.txt
	@touch $@

# The Jazzy wheels' exported CMake files name their build host's Python include dirs: point them here.
$(STAMP)/cmake_paths: $(STAMP)/pip scripts/patch_wheel_cmake.py
	@$(PY) scripts/patch_wheel_cmake.py $(VENV)
	@touch $@

$(STAMP)/interbotix_msgs: $(STAMP)/cmake_paths $(wildcard test/interbotix_xs_msgs/msg/* test/interbotix_xs_msgs/srv/*) test/interbotix_xs_msgs/CMakeLists.txt
	@rm -rf $(BUILD)/interbotix_xs_msgs && mkdir -p $(BUILD)
	@echo "[setup] building test-only interbotix_xs_msgs into $(VENV) (log: $(BUILD)/interbotix_xs_msgs.log)"
	@$(RUN_ENV) cmake -S test/interbotix_xs_msgs -B $(BUILD)/interbotix_xs_msgs $(CMAKE_ARGS) > $(BUILD)/interbotix_xs_msgs.log 2>&1 \
		|| (cat $(BUILD)/interbotix_xs_msgs.log; exit 1)
	@$(RUN_ENV) cmake --build $(BUILD)/interbotix_xs_msgs -j2 >> $(BUILD)/interbotix_xs_msgs.log 2>&1 \
		|| (tail -50 $(BUILD)/interbotix_xs_msgs.log; exit 1)
	@$(RUN_ENV) cmake --install $(BUILD)/interbotix_xs_msgs >> $(BUILD)/interbotix_xs_msgs.log 2>&1 \
		|| (tail -50 $(BUILD)/interbotix_xs_msgs.log; exit 1)
	@touch $@

# Incremental: symlink install, so edits to .py files are live; re-run for new files or new messages.
build: setup
	@mkdir -p $(BUILD)/cosmos_policy_ros
	@if [ ! -f $(BUILD)/cosmos_policy_ros/CMakeCache.txt ]; then \
		$(RUN_ENV) cmake -S . -B $(BUILD)/cosmos_policy_ros $(CMAKE_ARGS) -DAMENT_CMAKE_SYMLINK_INSTALL=ON \
			> $(BUILD)/cosmos_policy_ros.log 2>&1 || (cat $(BUILD)/cosmos_policy_ros.log; exit 1); fi
	@$(RUN_ENV) cmake --build $(BUILD)/cosmos_policy_ros -j2 >> $(BUILD)/cosmos_policy_ros.log 2>&1 \
		|| (tail -60 $(BUILD)/cosmos_policy_ros.log; exit 1)
	@$(RUN_ENV) cmake --install $(BUILD)/cosmos_policy_ros >> $(BUILD)/cosmos_policy_ros.log 2>&1 \
		|| (tail -60 $(BUILD)/cosmos_policy_ros.log; exit 1)
	@echo "built and installed cosmos_policy_ros into $(VENV)"

# Parallel `make test` runs share .venv and build/: serialise only the setup/build step.
locked-build:
	@flock $(CURDIR)/.make.lock $(MAKE) --no-print-directory build

# Two phases: everything else in parallel, then the real-time tests alone so no other test competes
# for the CPU while they count ticks (2-core machines). The machine-wide lock extends "alone" to other
# `make test` runs (another clone, another terminal): parallel phases share it, a timing phase takes it
# exclusively, so two suites at once still pass; ROS traffic is already kept apart by ROS_DOMAIN_ID.
TEST_LOCK ?= /tmp/cosmos_policy_ros_test.lock
test: locked-build
	$(RUN_ENV) flock --shared $(TEST_LOCK) $(PY) -m pytest -p no:cacheprovider -n $(TEST_WORKERS) -m "not timing" $(PYTEST_ARGS) test
	$(RUN_ENV) flock --exclusive $(TEST_LOCK) $(PY) -m pytest -p no:cacheprovider -m timing $(PYTEST_ARGS) test

demo: locked-build
	$(RUN_ENV) $(PY) -m cosmos_policy_ros.demo $(DEMO_ARGS)

bench: locked-build
	$(RUN_ENV) $(PY) bench/run_all.py $(BENCH_ARGS)

clean:
	rm -rf $(BUILD)

distclean: clean
	rm -rf $(VENV)
