# skyloc: the two commands are `make demo` and `make test`; both bootstrap a fresh machine.
SHELL := /bin/bash
# config/fastdds.xml: shared memory with a segment large enough for 0.9 MB camera frames.
ENV := set +u; source .venv/bin/activate && source install/setup.bash && \
       export FASTDDS_DEFAULT_PROFILES_FILE=$${FASTDDS_DEFAULT_PROFILES_FILE:-$(CURDIR)/config/fastdds.xml} &&

.PHONY: demo room test sim bench model build bootstrap flake8 check-launch webots-world clean

build bootstrap:
	@./scripts/bootstrap.sh

demo: build
	@$(ENV) python -m skyloc_sim.demo $(DEMO_ARGS)

room: build
	@$(ENV) python -m skyloc_coverage.room_demo $(ROOM_ARGS)

test:
	@./scripts/bootstrap.sh --training
	@./scripts/test.sh

sim: build
	@$(ENV) skyloc run sim $(SIM_ARGS)

# make model: training/ on a small configuration (needs the training extras: torch, timm, onnx)
model:
	@./scripts/bootstrap.sh --training
	@$(ENV) python -m skyloc_training.pipeline $(MODEL_ARGS)

bench: build
	@$(ENV) python bench/run.py $(BENCH_ARGS)

flake8: build
	@$(ENV) flake8 --max-line-length 99 src launch training bench scripts

check-launch: build
	@$(ENV) skyloc check-launch

webots-world: build
	@$(ENV) python -c 'from skyloc_sim.demo import export_webots_texture; export_webots_texture()'
	@./scripts/bootstrap.sh > /dev/null

clean:
	rm -rf build install log
