def test_json_rows_read_back_lazily():
    import numpy as np

    from avrec.storage.artifacts import JsonRows

    rows = [["jazz", "Comedy"], [], {"title": "猫", "tags": "funny"}, None, "x"]
    data, offsets = JsonRows.encode(rows)
    assert data.dtype == np.uint8 and len(offsets) == len(rows) + 1
    back = JsonRows(data, offsets)
    assert len(back) == 5 and list(back) == rows and back[-1] == "x"
    assert back[1:3] == rows[1:3]
    assert back[0] is back[0]  # parsed once, then kept
    import pytest

    with pytest.raises(IndexError):
        back[5]
