import pytest
import torch

from speechdistill.models.encoder import hf_encode
from speechdistill.models.errors import ModelLoadError
from speechdistill.models.factory import build_encoder, tiny_config, tiny_teacher
from speechdistill.models.frames import conv_output_lengths, receptive_field
from speechdistill.models.load import load_encoder, load_teacher
from speechdistill.models.teacher import Teacher


def test_frame_lengths_match_hf():
    cfg = tiny_config()
    model = build_encoder(cfg)
    for n in [400, 401, 719, 720, 16000, 16001]:
        assert conv_output_lengths(n, cfg.conv_kernel, cfg.conv_stride) == int(model._get_feat_extract_output_lengths(n))
    assert receptive_field(cfg.conv_kernel, cfg.conv_stride) == 400
    assert conv_output_lengths(399, cfg.conv_kernel, cfg.conv_stride) == 0


@pytest.mark.parametrize("family", ["hubert", "wavlm", "wav2vec2"])
@pytest.mark.parametrize("norm", ["group", "layer"])
def test_padded_and_unpadded_agree_on_valid_frames(family, norm):
    teacher = tiny_teacher(family, norm, num_layers=2)
    torch.manual_seed(0)
    a, b = torch.randn(7000), torch.randn(4100)
    wav = torch.zeros(2, 7000)
    wav[0], wav[1, :4100] = a, b
    out = teacher(wav, torch.tensor([7000, 4100]))
    ref_b = teacher(b[None])
    ref_a = teacher(a[None])
    n = int(ref_b.frame_lengths[0])
    assert out.frame_lengths.tolist() == [int(ref_a.frame_lengths[0]), n]
    for layer in range(3):
        torch.testing.assert_close(out.hidden_states[layer][1, :n], ref_b.hidden_states[layer][0], atol=2e-5, rtol=1e-4)
        torch.testing.assert_close(out.hidden_states[layer][0], ref_a.hidden_states[layer][0], atol=2e-5, rtol=1e-4)


def test_group_norm_naive_padding_would_differ():
    """Why the per-utterance CNN exists: HF's batched group-norm CNN sees the padding."""
    teacher = tiny_teacher("hubert", "group", num_layers=1)
    b = torch.randn(4100)
    wav = torch.zeros(2, 7000)
    wav[1, :4100] = b
    naive = teacher.encoder.model.feature_extractor(wav)[1, :, :12]
    alone = teacher.encoder.model.feature_extractor(b[None])[0, :, :12]
    assert (naive - alone).abs().max() > 1e-3


@pytest.mark.parametrize("family", ["hubert", "wavlm", "wav2vec2"])
def test_teacher_hidden_state_shapes(family):
    teacher = tiny_teacher(family, num_layers=3, hidden_size=32)
    assert not any(p.requires_grad for p in teacher.parameters())
    teacher.train()
    assert not teacher.encoder.training  # a teacher never trains
    out = teacher(torch.randn(2, 16000), torch.tensor([16000, 9000]))
    assert len(out.hidden_states) == 4
    assert all(h.shape == (2, 49, 32) for h in out.hidden_states)
    assert out.frame_lengths.tolist() == [49, 27]
    assert out.frame_mask.sum().item() == 76
    early = teacher(torch.randn(1, 8000), upto_layer=1)
    assert len(early.hidden_states) == 2


def test_load_teacher_from_local_dir_including_for_ctc(tmp_path):
    from transformers import HubertForCTC

    cfg = tiny_config("hubert", num_layers=2)
    torch.manual_seed(0)
    ctc = HubertForCTC(cfg).eval()
    ctc.save_pretrained(tmp_path / "ctc")
    teacher = load_teacher(tmp_path / "ctc")
    assert isinstance(teacher, Teacher) and teacher.num_layers == 2 and teacher.encoder.config.layerdrop == 0.0
    wav = torch.randn(1, 8000)
    ref = hf_encode(ctc.hubert, wav)
    torch.testing.assert_close(teacher(wav).hidden_states[-1], ref.hidden_states[-1])
    enc = load_encoder(tmp_path / "ctc")
    assert enc.num_output_layers == 2


def test_hub_id_offline_says_pass_a_local_dir(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelLoadError, match="local directory"):
        load_teacher("facebook/hubert-base-ls960")
    with pytest.raises(ModelLoadError, match="does not exist"):
        load_teacher("/no/such/model_dir")
