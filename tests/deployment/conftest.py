import pytest
import torch


@pytest.fixture(autouse=True)
def one_thread():
    """deploy times kernels; on a machine whose cores other processes share, two OpenMP threads per
    call make every timed call many times slower (not wrong). One thread keeps these tests fast."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
