"""RecommenderNN keeps the original layers; its config round-trips and refuses bad values."""

from __future__ import annotations

import pytest
import torch

from training.ml.model import CHANNELS, RecommenderConfig, RecommenderNN

ORIGINAL_SHAPES = {
    "user_embed.weight": (50, 32),
    "product_embed.weight": (40, 32),
    "interaction_embed.weight": (3, 32),
    "fc1.weight": (64, 97),
    "fc1.bias": (64,),
    "fc2.weight": (32, 64),
    "fc2.bias": (32,),
    "out.weight": (1, 32),
    "out.bias": (1,),
}


def _inputs(batch: int = 16, customers: int = 50, products: int = 40) -> tuple[torch.Tensor, ...]:
    generator = torch.Generator().manual_seed(0)
    return (
        torch.randint(0, customers, (batch,), generator=generator),
        torch.randint(0, products, (batch,), generator=generator),
        torch.randint(0, len(CHANNELS), (batch,), generator=generator),
        torch.randn(batch, generator=generator),
    )


def test_it_has_the_original_layers_with_their_shapes():
    model = RecommenderNN(RecommenderConfig(num_customers=50, num_products=40))

    shapes = {name: tuple(value.shape) for name, value in model.state_dict().items()}
    assert shapes == ORIGINAL_SHAPES
    assert isinstance(model.user_embed, torch.nn.Embedding)
    assert isinstance(model.product_embed, torch.nn.Embedding)
    assert isinstance(model.interaction_embed, torch.nn.Embedding)
    assert (model.fc1.in_features, model.fc1.out_features) == (97, 64)
    assert (model.fc2.in_features, model.fc2.out_features) == (64, 32)
    assert (model.out.in_features, model.out.out_features) == (32, 1)
    assert isinstance(model.sigmoid, torch.nn.Sigmoid)


def test_it_sizes_fc1_from_the_embedding_size_plus_the_prior():
    model = RecommenderNN(RecommenderConfig(num_customers=5, num_products=4, embed_dim=8))

    assert model.fc1.in_features == 8 * 3 + 1
    assert model.interaction_embed.num_embeddings == len(CHANNELS)


def test_it_adds_the_dot_branch_beside_the_original_layers():
    model = RecommenderNN(RecommenderConfig(num_customers=50, num_products=40, dot_branch=True))

    shapes = {name: tuple(value.shape) for name, value in model.state_dict().items()}
    assert {name: shapes[name] for name in ORIGINAL_SHAPES} == ORIGINAL_SHAPES
    assert set(shapes) - set(ORIGINAL_SHAPES) == {
        "gmf_user_embed.weight",
        "gmf_product_embed.weight",
        "gmf_out.weight",
        "gmf_out.bias",
    }
    assert shapes["gmf_out.weight"] == (1, 32)


@pytest.mark.parametrize("dot_branch", [False, True])
def test_it_returns_one_probability_per_example(dot_branch):
    model = RecommenderNN(RecommenderConfig(num_customers=50, num_products=40, dot_branch=dot_branch))

    predictions = model(*_inputs())

    assert predictions.shape == (16,)
    assert torch.all((predictions > 0) & (predictions < 1))
    assert torch.allclose(predictions, torch.sigmoid(model.logits(*_inputs())))


def test_it_gives_the_same_answer_twice_in_eval_mode_even_with_dropout():
    model = RecommenderNN(RecommenderConfig(num_customers=50, num_products=40, dropout=0.5)).eval()

    assert torch.equal(model(*_inputs()), model(*_inputs()))


def test_it_applies_dropout_only_while_training():
    torch.manual_seed(0)
    model = RecommenderNN(RecommenderConfig(num_customers=50, num_products=40, dropout=0.5)).train()

    assert not torch.equal(model(*_inputs()), model(*_inputs()))


def test_it_round_trips_its_config_through_a_plain_dict():
    config = RecommenderConfig(num_customers=7, num_products=9, embed_dim=16, dropout=0.1, dot_branch=True)

    assert RecommenderConfig.from_dict(config.to_dict()) == config
    assert config.to_dict() == {
        "num_customers": 7,
        "num_products": 9,
        "num_interactions": 3,
        "embed_dim": 16,
        "dropout": 0.1,
        "dot_branch": True,
        "customer_vector": "id",
        "history_length": 100,
        "history_decay": 1.0,
        "tied_context": False,
    }


def test_it_refuses_unknown_and_missing_config_keys():
    with pytest.raises(ValueError, match="embed_dimm"):
        RecommenderConfig.from_dict({"num_customers": 1, "num_products": 1, "embed_dimm": 8})
    with pytest.raises(ValueError, match="num_products"):
        RecommenderConfig.from_dict({"num_customers": 1})


@pytest.mark.parametrize(
    "fields",
    [
        {"num_customers": 0, "num_products": 1},
        {"num_customers": 1, "num_products": -1},
        {"num_customers": 1, "num_products": 1, "embed_dim": 0},
        {"num_customers": 1, "num_products": 1, "num_interactions": 0},
        {"num_customers": 1.5, "num_products": 1},
        {"num_customers": 1, "num_products": 1, "dropout": 1.0},
        {"num_customers": 1, "num_products": 1, "dot_branch": "yes"},
    ],
)
def test_it_refuses_sizes_that_are_not_positive_integers(fields):
    with pytest.raises(ValueError):
        RecommenderConfig(**fields)


def test_channel_logits_for_equals_logits_asked_once_per_channel():
    torch.manual_seed(3)
    model = RecommenderNN(RecommenderConfig(num_customers=6, num_products=8, embed_dim=8, dot_branch=True)).eval()
    customers = torch.tensor([0, 5, 2, 2])
    products = torch.tensor([7, 0, 3, 4])
    prior = torch.tensor([0.5, -1.0, 0.0, 2.0])

    together = model.channel_logits_for(model.user_embed(customers), model.gmf_user_embed(customers), products, prior)

    for channel in range(3):
        alone = model.logits(customers, products, torch.full((4,), channel), prior)
        assert torch.allclose(together[:, channel], alone, atol=1e-6)


def test_shared_logits_for_equals_logits_of_every_row_and_product():
    torch.manual_seed(4)
    model = RecommenderNN(RecommenderConfig(num_customers=6, num_products=8, embed_dim=8, dot_branch=True)).eval()
    customers = torch.tensor([0, 5, 2])
    channels = torch.tensor([2, 0, 1])
    products = torch.tensor([7, 0, 3, 3])
    prior = torch.tensor([0.5, -1.0, 0.0, 0.0])

    shared = model.shared_logits_for(
        model.user_embed(customers), model.gmf_user_embed(customers), channels, products, prior
    )

    for row in range(3):
        alone = model.logits(customers[row].repeat(4), products, channels[row].repeat(4), prior)
        assert torch.allclose(shared[row], alone, atol=1e-6)
