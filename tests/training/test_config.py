"""Every shipped recipe and DeepSpeed config loads and passes validation."""

import json
import re
from pathlib import Path
from types import SimpleNamespace

import pytest

from training.config import ConfigError, load_config

CONFIGS = Path(__file__).resolve().parents[2] / "training" / "configs"
RECIPES = sorted(CONFIGS.glob("*.yaml"))
PAPER_RECIPES = [CONFIGS / "stage1_full.yaml", CONFIGS / "stage2_lora.yaml"]
DEEPSPEED = sorted(CONFIGS.glob("*.json"))


def test_recipes_are_shipped():
    assert {path.name for path in RECIPES} >= {"stage1_full.yaml", "stage2_lora.yaml"}
    assert DEEPSPEED


@pytest.mark.parametrize("path", RECIPES, ids=lambda path: path.name)
def test_recipe_loads_and_starts_with_its_command(path):
    load_config(path)
    first_lines = path.read_text().splitlines()[:6]
    assert any(
        f"-m training.sft --config training/configs/{path.name}" in line for line in first_lines
    )


@pytest.mark.parametrize("path", PAPER_RECIPES, ids=lambda path: path.name)
def test_paper_recipes_use_the_paper_hyperparameters(path):
    config = load_config(path)
    assert config.data.cutoff_len == 1024
    assert config.train["learning_rate"] == 1.0e-5
    assert config.train["lr_scheduler_type"] == "cosine"
    assert config.train["warmup_steps"] == 0.1
    assert config.train["bf16"] is True
    assert config.train["per_device_train_batch_size"] == 16
    assert config.train["gradient_accumulation_steps"] == 2
    assert (CONFIGS.parent.parent / config.train["deepspeed"]).exists()


def test_stage_defaults_from_the_paper():
    stage1 = load_config(CONFIGS / "stage1_full.yaml")
    stage2 = load_config(CONFIGS / "stage2_lora.yaml")
    assert (stage1.stage, stage1.train["num_train_epochs"]) == ("full", 1)
    assert (stage2.stage, stage2.train["num_train_epochs"]) == ("lora", 2)
    assert (stage2.lora.r, stage2.lora.alpha, stage2.lora.dropout) == (64, 128, 0.05)
    assert stage2.lora.target_modules == "all-linear"
    assert stage2.model.name_or_path == stage1.train["output_dir"] + "/model"


@pytest.mark.parametrize("path", DEEPSPEED, ids=lambda path: path.name)
def test_deepspeed_config_is_zero3_with_trainer_filled_values(path):
    config = json.loads(path.read_text())
    zero = config["zero_optimization"]
    assert zero["stage"] == 3
    # The final model is saved whole, not as ZeRO shards.
    assert zero["stage3_gather_16bit_weights_on_model_save"] is True
    # The Trainer's optimizer (AdamW) runs under ZeRO: DeepSpeed must allow it.
    assert config["zero_allow_untested_optimizer"] is True
    for key in ("train_micro_batch_size_per_gpu", "gradient_accumulation_steps"):
        assert config[key] == "auto"


@pytest.mark.parametrize("path", DEEPSPEED, ids=lambda path: path.name)
def test_deepspeed_config_resolves_against_the_recipe(path):
    """transformers' own DeepSpeed integration fills every "auto" from the recipe."""
    pytest.importorskip("deepspeed")
    from transformers import LlamaConfig, TrainingArguments
    from transformers.integrations.deepspeed import HfTrainerDeepSpeedConfig

    recipe = load_config(CONFIGS / "stage1_full.yaml")
    train = {**recipe.train, "deepspeed": None, "bf16": False, "use_cpu": True}
    arguments = TrainingArguments(**train)
    resolved = HfTrainerDeepSpeedConfig(str(path))
    resolved.trainer_config_process(arguments)
    llama_3_8b = SimpleNamespace(config=LlamaConfig(hidden_size=4096))
    resolved.trainer_config_finalize(arguments, model=llama_3_8b, num_training_steps=100)
    assert resolved.config["train_micro_batch_size_per_gpu"] == 16
    assert resolved.config["gradient_accumulation_steps"] == 2
    assert "auto" not in json.dumps(resolved.config)


def test_overrides_change_nested_values():
    config = load_config(
        CONFIGS / "stage1_full.yaml", ["train.max_steps=10", "data.files=[a.json, b.json]"]
    )
    assert config.train["max_steps"] == 10
    assert config.data.files == ["a.json", "b.json"]


@pytest.mark.parametrize(
    "override, message",
    [
        ("data.cutof_len=512", "unknown key data.cutof_len"),
        ("train.warmup_ratio=0.1", "write `warmup_steps: 0.1`"),
        ("train.learning_rat=1", "train.learning_rat is not a TrainingArguments keyword"),
        ("stage=partial", "stage must be one of"),
        ("data.files=[]", "data.files lists no training file"),
        ("max_steps", "expected section.key=value"),
        # values of the right type no run can use: refused before anything is read
        ("model.torch_dtype=bf16", "model.torch_dtype 'bf16': one of "),
        ("data.max_samples=-1", "data.max_samples must be at least 1, got -1"),
        ("data.cutoff_len=0", "data.cutoff_len must be at least 1, got 0"),
        ("train.output_dir=null", "train.output_dir must name a folder"),
        ("train.per_device_train_batch_size=0", "per_device_train_batch_size must be at le"),
        ("train.eval_strategy=steps", "train.eval_strategy 'steps' needs data.eval_files"),
        # before: numpy's "Seed must be between 0 and 2**32 - 1" once the tokenizer loaded
        ("train.seed=-1", "override 'train.seed=-1': train.seed must be 0 to 2\\*\\*32 - 1"),
        # before: an empty system turn (the override `data.system_prompt=` gave none)
        ('data.system_prompt=""', "data.system_prompt is empty: leave it out"),
        # before: an encoding error once tokenizing began
        (
            'data.system_prompt="Be \\ud83d brief"',
            "data.system_prompt holds a lone surrogate '\\\\ud83d' at character 3 \\(a "
            "\\\\u escape of half a character",
        ),
    ],
)
def test_bad_recipes_are_named(override, message):
    with pytest.raises(ConfigError, match=message):
        load_config(CONFIGS / "stage1_full.yaml", [override])


def test_an_override_given_twice_is_refused():
    """Before: the last one won, without a word."""
    said = "override 'train.max_steps=20': train.max_steps given twice"
    with pytest.raises(ConfigError, match=said + " \\(also 'train.max_steps=10'\\)"):
        load_config(CONFIGS / "stage1_full.yaml", ["train.max_steps=10", "train.max_steps=20"])


def with_overrides(*overrides):
    return load_config(CONFIGS / "stage1_full.yaml", list(overrides))


@pytest.mark.parametrize(
    "base, output, where", [("base", "base", "is"), ("out/model", "out", "holds")]
)
def test_an_output_dir_that_is_the_model_folder_or_holds_it_is_refused(
    tmp_path, base, output, where
):
    """Before: checkpoints, model/ and the run's records written among the base model's
    files, or the run's model/ installed over the base it trains."""
    (tmp_path / base).mkdir(parents=True)
    base, output = tmp_path / base, tmp_path / output
    overrides = [f"model.name_or_path={base}", f"train.output_dir={output}"]
    with pytest.raises(ConfigError, match=f"train.output_dir {output} {where} model.name_or"):
        with_overrides(*overrides)
    assert with_overrides(f"model.name_or_path={base}", f"train.output_dir={tmp_path / 'x'}")
    assert with_overrides(f"model.name_or_path={base}", f"train.output_dir={base / 'run'}")


def test_string_fields_keep_the_text_typed():
    config = with_overrides(
        "train.eval_strategy=no",
        "train.run_name=1.10",
        "train.hub_model_id=true",
        "model.name_or_path=007",
        "data.files=[2024, 1.10]",
        "data.system_prompt=null",
    )
    assert config.train["eval_strategy"] == "no"
    assert (config.train["run_name"], config.train["hub_model_id"]) == ("1.10", "true")
    assert config.model.name_or_path == "007"
    assert config.data.files == ["2024", "1.10"]
    assert config.data.system_prompt is None
    # a colon in text is text, not a mapping (before: refused as a mapping)
    assert with_overrides("data.system_prompt=Rule: be brief.").data.system_prompt == (
        "Rule: be brief."
    )
    # text YAML cannot read is text too (before: refused as invalid YAML)
    assert with_overrides("train.run_name=[x].v2").train["run_name"] == "[x].v2"
    assert with_overrides("data.system_prompt={a} b").data.system_prompt == "{a} b"
    with pytest.raises(ConfigError, match="expected list, got {'a': 'b'}"):
        with_overrides("data.files=a: b")  # a list field still takes no mapping
    with pytest.raises(ConfigError, match="invalid YAML"):
        with_overrides("data.files=[x].v2")  # and no text YAML cannot read
    from transformers import TrainingArguments

    train = {**config.train, "deepspeed": None, "bf16": False, "use_cpu": True}
    assert TrainingArguments(**train).eval_strategy == "no"


def test_typed_fields_still_parse():
    config = with_overrides(
        "train.max_steps=10",
        "train.learning_rate=1e-4",
        "train.bf16=false",
        "train.save_steps=0.25",
        "data.cutoff_len=512",
        "data.skip_malformed=yes",
        "data.max_samples=null",
        "lora.dropout=0.1",
        "resume_from_checkpoint=no",
    )
    assert config.train["max_steps"] == 10 and isinstance(config.train["max_steps"], int)
    assert config.train["learning_rate"] == 1e-4
    assert (config.train["bf16"], config.train["save_steps"]) == (False, 0.25)
    assert (config.data.cutoff_len, config.data.skip_malformed) == (512, True)
    assert config.data.max_samples is None and config.lora.dropout == 0.1
    assert config.resume_from_checkpoint is False


@pytest.mark.parametrize(
    "override, message",
    [
        ("train.max_steps=ten", r"override 'train.max_steps=ten': expected int, got 'ten'"),
        ("data.cutoff_len=1.5", "data.cutoff_len=1.5'.*expected int"),
        ("data.skip_malformed=maybe", "expected bool, got 'maybe'"),
        ("data.files=[a", "override 'data.files=\\[a': invalid YAML"),
        ("data.eval_files=null", r"expected list, got 'null' \(none at all is \[\]\)$"),
    ],
)
def test_untypable_override_names_key_and_value(override, message):
    with pytest.raises(ConfigError, match=message):
        with_overrides(override)


def test_recipe_file_values_are_typed_by_field(tmp_path):
    text = (CONFIGS / "demo_stage1.yaml").read_text()
    path = tmp_path / "recipe.yaml"
    path.write_text(text.replace("eval_strategy: steps", "eval_strategy: no"))
    assert load_config(path).train["eval_strategy"] == "no"
    path.write_text(text.replace("max_steps: 6000", "max_steps: lots"))
    line = text.splitlines().index("  max_steps: 6000") + 1
    message = f"{path}, line {line}: train.max_steps: expected int, got 'lots'"
    with pytest.raises(ConfigError, match=message):
        load_config(path)


def test_system_prompt_setting():
    assert with_overrides().data.system_prompt is None
    helpful = with_overrides("data.system_prompt=You are a helpful assistant.")
    assert helpful.data.system_prompt == "You are a helpful assistant."


def test_a_key_given_twice_is_named_with_its_line(tmp_path):
    """Plain YAML keeps the last: a whole first `train:` section was silently dropped."""
    text = (CONFIGS / "stage1_full.yaml").read_text()
    path = tmp_path / "twice.yaml"
    path.write_text(text + "train:\n  learning_rate: 1.0e-4\n")
    line = len(text.splitlines()) + 1
    with pytest.raises(
        ConfigError,
        match=f"twice.yaml: invalid YAML: line {line}, column 1: the key 'train' is given twice$",
    ):
        load_config(path)


def test_renamed_training_arguments_take_the_installed_name(tmp_path, monkeypatch):
    import warnings

    import transformers
    from packaging.version import Version
    from transformers import TrainingArguments

    import training.config as config_module

    shipped = CONFIGS / "stage1_full.yaml"
    old_spelling = tmp_path / "old_spelling.yaml"
    old_spelling.write_text(shipped.read_text().replace("activation_", "gradient_"))
    # transformers 5.23 added the new name (5.17 to 5.22, the last Python 3.10 gets, lack it)
    new, old = "activation_checkpointing", "gradient_checkpointing"
    if Version(transformers.__version__) < Version("5.23"):
        new, old = old, new
    for recipe in (shipped, old_spelling):
        train = load_config(recipe).train
        assert train[new] is True and old not in train
        with warnings.catch_warnings():
            warnings.simplefilter("error", FutureWarning)  # 5.25 warns for the old name
            TrainingArguments(**{**train, "deepspeed": None, "bf16": False, "use_cpu": True})
    with pytest.raises(ConfigError, match="checkpointing are one setting; give one"):
        with_overrides("train.gradient_checkpointing=false")  # the recipe gives the new name
    if new != "activation_checkpointing":
        return  # this transformers is the one without the new name, tested above
    # a transformers without the new name (5.17) gets the old one
    accepted = config_module._accepted_training_arguments() - {
        "activation_checkpointing",
        "activation_checkpointing_kwargs",
    }
    monkeypatch.setattr(config_module, "_accepted_training_arguments", lambda: accepted)
    for recipe in (shipped, old_spelling):
        train = load_config(recipe).train
        assert train["gradient_checkpointing"] is True and "activation_checkpointing" not in train


def written_recipe(tmp_path, text: str) -> Path:
    path = tmp_path / "recipe.yaml"
    path.write_text(text)
    return path


def line_of(text: str, content: str) -> int:
    return text.splitlines().index(content) + 1


@pytest.mark.parametrize(
    "stage, old, new, message",
    [
        ("stage1_full", "  cutoff_len: 1024", "  cutoff_len: 0", "data.cutoff_len must be at le"),
        ("stage1_full", "  cutoff_len: 1024", "  cutof_len: 9", "unknown key data.cutof_len"),
        (
            "stage1_full",
            "  learning_rate: 1.0e-5",
            "  learning_rate: -1",
            "train.learning_rate must",
        ),
        ("stage2_lora", "  r: 64", "  r: 0", "lora.r must be at least 1, got 0"),
        ("stage2_lora", "  dropout: 0.05", "  dropout: 1.5", r"lora.dropout must be in \[0, 1\)"),
        # before: an adapter that changes nothing (peft scales it by alpha / r)
        ("stage2_lora", "  alpha: 128", "  alpha: 0", "lora.alpha must be at least 1, got 0"),
        # before: one step more at every rerun (0); a model written untrained (0 epochs)
        ("stage1_full", "  num_train_epochs: 1", "  max_steps: 0",
         "train.max_steps must be at least 1, or -1 to train train.num_train_epochs epochs, "
         "got 0"),
        ("stage2_lora", "  num_train_epochs: 2", "  num_train_epochs: 0",
         r"train.num_train_epochs must be a finite number above 0 \(train.max_steps is -1: "
         "the run is sized in epochs\\), got 0"),
    ],
)  # fmt: skip
def test_a_bad_value_in_a_recipe_names_its_line(tmp_path, stage, old, new, message):
    """Values no run can use are refused with the file and line (before: the file only, or,
    for LoRA's, a peft error without the field after the data were read and the model
    loaded)."""
    text = (CONFIGS / f"{stage}.yaml").read_text()
    assert old in text.splitlines()
    path = written_recipe(tmp_path, text.replace(old, new))
    with pytest.raises(ConfigError, match=f"{path}, line {line_of(text, old)}: {message}"):
        load_config(path)


@pytest.mark.parametrize(
    "override, message",
    [
        ("lora.r=0", "lora.r must be at least 1, got 0"),
        ("lora.target_modules=[]", "lora.target_modules names no module"),
        ("model.attn_implementation=flashy", "model.attn_implementation 'flashy': one of "),
        ("model.chat_template=nope.jinja", "model.chat_template nope.jinja: no such file"),
        ("train.learning_rate=-1", "train.learning_rate must be a finite number >= 0, got -1"),
        # before: a NaN model written; a TypeError traceback once the Trainer started
        ("train.learning_rate=.inf", "train.learning_rate must be a finite number >= 0, got inf"),
        ("train.lr_scheduler_kwargs=5", "train.lr_scheduler_kwargs must be a mapping"),
        ("train.warmup_steps=-0.5", "train.warmup_steps must be a finite number >= 0 \\(below"),
        ("train.lr_scheduler_type=bogus", "train.lr_scheduler_type 'bogus': one of linear, "),
        ("=3", "expected section.key=value"),  # before: "unknown key ''"
        ("train.=3", "expected section.key=value"),
        # before: a TypeError traceback once the model and data had loaded
        (
            "train.lr_scheduler_kwargs={min_lr: 1e-6}",
            "train.lr_scheduler_kwargs {'min_lr': "
            "1e-06} do not make a cosine schedule \\(TypeError: .*unexpected keyword",
        ),
        # before: trained as a READ
        ("data.system_prompt=Be brief<|end-of-read|>", "data.system_prompt holds '<|end-of-r"),
        # before: blamed on the recipe file
        ("foo.bar=1", "unknown key 'foo' \\(known: "),
        ("lora.alpha=-16", "lora.alpha must be at least 1, got -16"),
        # before: read as "sized in epochs", silently
        ("train.max_steps=-2", "train.max_steps must be at least 1, or -1 to train "),
        ("train.num_train_epochs=-1", "train.num_train_epochs must be a finite number above 0"),
        ("train.num_train_epochs=.nan", "train.num_train_epochs must be .* got nan"),
        # before: KeyError 'eval_bleu' after the first evaluation, its steps lost
        ("train.metric_for_best_model=bleu", "train.metric_for_best_model 'bleu': an eval"),
        ("train.report_to=nosuch", "train.report_to 'nosuch': one of none, all, azure_ml, "),
        # before: accepted, never read, recorded in recipe.json as if it resumed
        ("train.resume_from_checkpoint=x", "train.resume_from_checkpoint: the Trainer never"),
    ],
)
def test_bad_values_of_an_override_name_the_override(override, message):
    with pytest.raises(ConfigError, match=f"^override '{re.escape(override)}': {message}"):
        load_config(CONFIGS / "stage2_lora.yaml", [override])


@pytest.mark.parametrize("installed", [False, True])
def test_a_reporting_integration_must_be_installed(monkeypatch, installed):
    """Before: tensorboard missing was a traceback once the data and model had loaded. Its
    callback is made as the Trainer makes it; `all` and `none` in a list are taken."""
    from transformers.integrations import integration_utils

    class Callback:
        def __init__(self):
            if not installed:
                raise RuntimeError("TensorBoardCallback requires tensorboard to be installed.")

    callbacks = {**integration_utils.INTEGRATION_TO_CALLBACK, "tensorboard": Callback}
    monkeypatch.setattr(integration_utils, "INTEGRATION_TO_CALLBACK", callbacks)
    overrides = ["train.report_to=[none, tensorboard]", "train.metric_for_best_model=eval_loss"]
    if installed:
        assert load_config(CONFIGS / "stage2_lora.yaml", overrides).train["report_to"]
    else:
        with pytest.raises(ConfigError, match="report_to tensorboard: TensorBoardCallback requ"):
            load_config(CONFIGS / "stage2_lora.yaml", overrides)
    for given in ("[all]", "[none]", "all"):  # a review: [all] was refused
        load_config(CONFIGS / "stage2_lora.yaml", [f"train.report_to={given}"])


def test_a_run_sized_in_steps_takes_any_epochs():
    """`num_train_epochs` counts only where `max_steps` is -1 (transformers' default)."""
    sized = load_config(
        CONFIGS / "stage2_lora.yaml", ["train.max_steps=5", "train.num_train_epochs=0"]
    )
    assert sized.train["max_steps"] == 5
    assert (
        load_config(CONFIGS / "stage2_lora.yaml", ["train.max_steps=-1"]).train["max_steps"] == -1
    )


def test_numbers_in_nested_settings_are_numbers(tmp_path):
    """YAML 1.1 reads `1e-6` (no dot) as text: a scheduler's min_lr crashed the Trainer
    after the data were read and the model loaded."""
    with_min = "train.lr_scheduler_type=cosine_with_min_lr"
    config = with_overrides(with_min, "train.lr_scheduler_kwargs={min_lr: 1e-6}")
    assert config.train["lr_scheduler_kwargs"] == {"min_lr": 1e-6}
    text = (CONFIGS / "stage1_full.yaml").read_text()
    text = text.replace("lr_scheduler_type: cosine\n", "lr_scheduler_type: cosine_with_min_lr\n")
    nested = text.replace("train:\n", "train:\n  lr_scheduler_kwargs: {min_lr: 5E-7}\n", 1)
    assert load_config(written_recipe(tmp_path, nested)).train["lr_scheduler_kwargs"] == {
        "min_lr": 5e-7
    }
    assert with_overrides("train.run_name=1e-6").train["run_name"] == "1e-6"  # text stays text
    # the schedules stepped by a metric are built, not stepped (a review: greedy refused)
    evaluated = ["train.eval_strategy=steps", "train.eval_steps=5", "data.eval_files=[e.jsonl]"]
    for kind in ("greedy", "reduce_lr_on_plateau", "polynomial", "constant"):
        config = with_overrides(f"train.lr_scheduler_type={kind}", *evaluated)
        assert config.train["lr_scheduler_type"] == kind
    # a schedule stepped by the evaluation's loss needs one (before: TrainingArguments' text)
    with pytest.raises(ConfigError, match="lr_scheduler_type greedy is stepped by an evaluat"):
        with_overrides("train.lr_scheduler_type=greedy")
    said = "do not make a cosine_with_min_lr schedule \\(TypeError: unsupported operand"
    with pytest.raises(ConfigError, match=said):  # before: a traceback after the load
        with_overrides(with_min, "train.lr_scheduler_kwargs={min_lr: abc}")
    said = "train.learning_rate 0: a cosine_with_min_lr schedule divides by it"
    with pytest.raises(ConfigError, match=said):  # before: blamed on the kwargs
        with_overrides(with_min, "train.lr_scheduler_kwargs={min_lr: 0}", "train.learning_rate=0")
    said = "train.lr_scheduler_kwargs {'timescale': 0} do not make a inverse_sqrt schedule"
    with pytest.raises(ConfigError, match=re.escape(said)):  # a rate above 0: the kwargs
        with_overrides(
            "train.lr_scheduler_type=inverse_sqrt", "train.lr_scheduler_kwargs={timescale: 0}"
        )
    rate_zero = with_overrides("train.lr_scheduler_type=cosine", "train.learning_rate=0")
    assert rate_zero.train["learning_rate"] == 0  # a schedule that does not divide by it


def test_yaml_the_loader_could_not_take(tmp_path):
    text = (CONFIGS / "stage2_lora.yaml").read_text()
    path = written_recipe(tmp_path, text.replace("lora:\n", "lora:\n  ? [r, alpha]\n  : 8\n"))
    line = line_of(text, "lora:") + 1
    with pytest.raises(
        ConfigError, match=f"{path}: invalid YAML: line {line}, column 5: a key must be text$"
    ):
        load_config(path)  # before: a TypeError traceback
    broken = written_recipe(tmp_path, "stage: full\nmodel: [a\n")
    with pytest.raises(ConfigError, match=r"recipe.yaml: invalid YAML: line 3, column 1: ") as e:
        load_config(broken)
    assert "\n" not in str(e.value) and "<unicode string>" not in str(e.value)


def test_merge_keys_set_a_section(tmp_path):
    """Merge keys are YAML (before: "invalid YAML"); a section's own keys may set one again."""
    text = (CONFIGS / "stage2_lora.yaml").read_text()
    lines = [line for line in text.splitlines() if not line.startswith(("  r:", "  alpha:"))]
    shared = "\n".join(lines).replace("lora:", "lora:\n  <<: {r: 8, alpha: 16}\n  r: 4", 1)
    config = load_config(written_recipe(tmp_path, shared + "\n"))
    assert (config.lora.r, config.lora.alpha) == (4, 16)
    # the README's form: the block under an `x-` key, for its anchor alone (before:
    # "unknown key 'defaults'", wherever it was put)
    anchored = "x-defaults: &defaults {r: 8, alpha: 16}\n" + shared.replace(
        "<<: {r: 8, alpha: 16}", "<<: *defaults"
    )
    config = load_config(written_recipe(tmp_path, anchored + "\n"))
    assert (config.lora.r, config.lora.alpha) == (4, 16)
    with pytest.raises(ConfigError, match=r"unknown key 'defaults' \(known: "):
        load_config(written_recipe(tmp_path, anchored.replace("x-defaults", "defaults") + "\n"))
    # an override of the block would change nothing (merged as the file was read): refused
    for override in ("x-defaults.r=3", "x-defaults=5", "x-typo.r=3"):
        with pytest.raises(ConfigError, match=f"override '{override}': x-.* merge keys alone"):
            load_config(written_recipe(tmp_path, anchored + "\n"), [override])


def test_a_misspelt_recipe_key_is_named_with_the_key_it_may_be(tmp_path):
    text = (CONFIGS / "stage2_lora.yaml").read_text()
    with pytest.raises(ConfigError, match=r"unknown key 'trian' \(did you mean 'train'\?\)"):
        load_config(written_recipe(tmp_path, text.replace("train:", "trian:", 1)))
    misspelt = text.replace("  learning_rate:", "  learning_rat:", 1)
    said = r"train.learning_rat is not a TrainingArguments keyword \(did you mean 'learning_rate'"
    with pytest.raises(ConfigError, match=said + r"\?\)$"):
        load_config(written_recipe(tmp_path, misspelt))


def test_a_recipe_that_is_no_yaml_text_file_is_one_line(tmp_path):
    with pytest.raises(ConfigError, match=f"^{tmp_path}: a folder, not a recipe file$"):
        load_config(tmp_path)
    latin = tmp_path / "latin1.yaml"
    latin.write_bytes("stage: full  # Übersetzung\n".encode("latin-1"))
    with pytest.raises(ConfigError, match=f"^{latin}: not UTF-8 text"):
        load_config(latin)


def test_an_empty_section_takes_overrides(tmp_path):
    text = (CONFIGS / "stage2_lora.yaml").read_text()
    lines = text.splitlines()
    start = lines.index("lora:")
    end = next(i for i in range(start + 1, len(lines)) if not lines[i].startswith("  "))
    empty = "\n".join(lines[: start + 1] + lines[end:]) + "\n"
    config = load_config(written_recipe(tmp_path, empty), ["lora.r=8"])
    assert config.lora.r == 8  # before: "'lora' ... is not a section"


def test_a_chat_template_that_does_not_compile_is_refused_with_the_recipe(tmp_path):
    """Before: a jinja traceback once the model had loaded. One that compiles is rendered
    once the tokenizer, whose tokens it may read (`eos_token`), has loaded."""
    path = tmp_path / "chat.jinja"
    path.write_text("{% for m in messages %}{{ m['content'] }{% endfor %}")
    override = f"model.chat_template={path}"
    with pytest.raises(
        ConfigError,
        match=f"^override '{override}': model.chat_template {path}: line 1: unexpected '}}'",
    ):
        load_config(CONFIGS / "stage2_lora.yaml", [override])
    path.write_text("{% for m in messages %}{{ m['content'] + eos_token }}{% endfor %}")
    assert load_config(CONFIGS / "stage2_lora.yaml", [override]).model.chat_template == str(path)


def test_a_data_file_listed_twice_is_refused_naming_both_entries(tmp_path, monkeypatch):
    """Before: `small.jsonl` twice (or as `./small.jsonl`, or through a link) read its
    records twice, the report saying "80 records read from 1 files", 40 from it. The
    recipe weights no data, so listing a file twice is no way to upsample it."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "small.jsonl").write_text("{}\n")
    (tmp_path / "link.jsonl").symlink_to("small.jsonl")
    text = (CONFIGS / "stage1_full.yaml").read_text()
    old = "    - data/east/SiMT-De-En-660K.json"
    for name, entries in [
        ("files", ["small.jsonl", "small.jsonl"]),
        ("files", ["small.jsonl", "other.jsonl", "./small.jsonl"]),
        ("files", [str(tmp_path / "small.jsonl"), "link.jsonl"]),
        ("files", ["absent.jsonl", "./absent.jsonl"]),  # not there yet: by its path
        ("eval_files", ["small.jsonl", "link.jsonl"]),
    ]:
        listed = "\n".join(f"    - {entry}" for entry in entries)
        if name == "files":
            path = written_recipe(tmp_path, text.replace(old, listed))
        else:
            path = written_recipe(tmp_path, text.replace(old, f"{old}\n  eval_files:\n{listed}"))
        line = path.read_text().splitlines().index(f"  {name}:") + 1
        twice = [entry for entry in entries if entry != "other.jsonl"]
        message = (
            f"{path}, line {line}: data.{name} lists one file twice, as {twice[0]} and "
            f"{twice[1]}: its records would be read twice; list each file once"
        )
        with pytest.raises(ConfigError, match=f"^{re.escape(message)}$"):
            load_config(path)
    override = "data.files=[a.jsonl, ./a.jsonl]"
    with pytest.raises(ConfigError, match=f"^override '{re.escape(override)}': data.files lists"):
        load_config(CONFIGS / "stage1_full.yaml", [override])
    config = load_config(CONFIGS / "stage1_full.yaml", ["data.files=[small.jsonl, link2.jsonl]"])
    assert config.data.files == ["small.jsonl", "link2.jsonl"]
