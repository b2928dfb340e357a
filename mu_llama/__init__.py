"""mu-llama: music understanding and captioning."""
