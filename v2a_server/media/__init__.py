"""Media I/O: decoding video frames and audio streams from files (PyAV, soundfile).

``video_io.read_video`` samples a video at a fixed rate; ``audio_io.load_container_audio``
decodes the audio stream of any container. The server's own movie reading for clients
(``serving.source_frames``) is not here: it answers protocol requests.
"""
