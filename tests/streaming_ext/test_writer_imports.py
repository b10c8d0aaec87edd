"""writer.defer_package_inits: streaming's writer modules without its package __init__s, and
the packages still complete (their __init__ runs) the first time anyone asks them for more."""
import subprocess
import textwrap

from tests.helpers import PY, ROOT

SCRIPT = textwrap.dedent('''
    import sys
    from data_prep.streaming_ext import install_transport, writer
    assert writer.defer_package_inits()
    from streaming.base.util import merge_index  # first: no order is required
    writer.import_writer_modules()
    install_transport()
    import streaming
    from streaming.base.format.mds.writer import MDSWriter
    from streaming.base.storage import upload
    heavy = ('transformers', 'sklearn', 'torchvision', 'streaming.base.dataset')
    print('light', streaming.__version__, sorted(m for m in heavy if m in sys.modules))
    assert getattr(upload, upload.UPLOADERS['oci']).__module__ == 'data_prep.streaming_ext.oci'
    from streaming import MDSWriter as W, StreamingDataset  # completes both packages
    import streaming.base
    assert W is MDSWriter and streaming.base.StreamingDataset is StreamingDataset
    assert type(streaming) is type(sys) and streaming.text.__name__ == 'streaming.text'
    assert callable(merge_index) and not writer.defer_package_inits()  # imported now
    print('full', sorted(m for m in heavy if m in sys.modules))
''')


def test_writer_modules_without_package_inits_then_the_whole_package_on_demand():
    proc = subprocess.run([PY, '-c', SCRIPT], cwd=ROOT, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.splitlines() == [
        "light 0.12.0 []", "full ['sklearn', 'streaming.base.dataset', 'torchvision', "
        "'transformers']"]
