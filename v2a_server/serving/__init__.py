"""What runs when the server runs (``v2a-server``, started by ``commands/serve.py``).

``server``: the socket loop (``FoleyServer``) and its bounded FIFO; ``jobs``: ``Job`` and the
``JobQueue``; ``engine``: the seam between the loop and whatever runs the jobs
(``LocalEngine``: model worker threads); ``events``: what an engine reports back;
``worker``: the model worker thread; ``payload``: a generate request -> pipeline arguments;
``result``: pipeline output -> the ``result`` body and its sync review data;
``source_frames``: movie frames the server reads itself for a loopback client;
``security``: the bind check and CURVE keys.

Nothing here imports ``training`` or ``synth``.
"""
