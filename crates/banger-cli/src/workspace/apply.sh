#!/bin/sh
# Applies a banger workspace payload inside the guest.
# $1: the directory the payload was unpacked into. Everything variable is
# read from files in it, never from the command line.
set -eu
d=$1
repo=/root/repo

value() { cat "$d/$1" 2>/dev/null || true; }

rm -rf "$repo"
if [ -f "$d/repo.bundle" ]; then
    git clone --quiet --no-checkout "$d/repo.bundle" "$repo"
    git -C "$repo" remote remove origin
else
    git init --quiet "$repo"
fi

head=$(value head)
head_branch=$(value head_branch)
if [ -n "$head" ]; then
    if [ -n "$head_branch" ]; then
        git -C "$repo" checkout --quiet -B "$head_branch" "$head"
    else
        git -C "$repo" checkout --quiet --detach "$head"
    fi
elif [ -n "$head_branch" ]; then
    git -C "$repo" symbolic-ref HEAD "refs/heads/$head_branch"
fi

branch=$(value branch)
from=$(value from)
if [ -n "$branch" ]; then
    if [ -n "$from" ]; then
        git -C "$repo" checkout --quiet -b "$branch" "$from"
    else
        git -C "$repo" checkout --quiet -b "$branch"
    fi
fi

# The working tree as it is on the host: deleted, changed and new files.
# Deletions first, and the directories they empty go too, so that a path
# that changed kind (a directory now a symlink or a file, or the reverse)
# can take its new form.
if [ -s "$d/deleted" ]; then
    (cd "$repo" && xargs -0 rm -f -- < "$d/deleted")
    (cd "$repo" && tr '\0' '\n' < "$d/deleted" | sed -n 's|/[^/]*$||p' | sort -ru |
        while IFS= read -r dir; do rmdir -p -- "$dir" 2>/dev/null || true; done)
fi
if [ -d "$d/tree" ]; then
    cp -a "$d/tree/." "$repo/"
fi

name=$(value user.name)
email=$(value user.email)
if [ -n "$name" ]; then git -C "$repo" config user.name "$name"; fi
if [ -n "$email" ]; then git -C "$repo" config user.email "$email"; fi
global_name=$(value global.name)
global_email=$(value global.email)
if [ -n "$global_name" ]; then HOME=/root git config --global user.name "$global_name"; fi
if [ -n "$global_email" ]; then HOME=/root git config --global user.email "$global_email"; fi

# The workspace as copied in, as a commit (HEAD, branch and index stay as
# they are): `vm workspace export` diffs against it by default, so its
# patch applies to the host checkout the workspace came from.
index="$d/index"
if [ -f "$repo/.git/index" ]; then cp "$repo/.git/index" "$index"; fi
GIT_INDEX_FILE=$index git -C "$repo" add -A
tree=$(GIT_INDEX_FILE=$index git -C "$repo" write-tree)
parent=$(git -C "$repo" rev-parse -q --verify 'HEAD^{commit}' || true)
base=$(GIT_AUTHOR_NAME=banger GIT_AUTHOR_EMAIL=banger@localhost \
    GIT_COMMITTER_NAME=banger GIT_COMMITTER_EMAIL=banger@localhost \
    git -C "$repo" commit-tree "$tree" ${parent:+-p "$parent"} -m "banger: the workspace as copied in")
git -C "$repo" update-ref refs/banger/copied-in "$base"
echo "banger-base $base"

rm -rf "$d"
