# Tab completion for smartosctl in interactive bash logins (ssh), without the bash-completion
# package: the script is click's, made when the image was built.
if [ -n "${BASH_VERSION:-}" ] && [ -n "${PS1:-}" ] && [ -r /usr/share/bash-completion/completions/smartosctl ]; then
    . /usr/share/bash-completion/completions/smartosctl
fi
