// The documentation site: VitePress over the repository's own Markdown.
//
// tools/docs.sh copies the sources into website/.stage/ before every build or
// serve, laid out as in the repository (README.md, docs/*.md,
// sdks/<lang>/README.md), so the relative links between them work unchanged
// (README.md is also copied to index.md, the home page). No `rewrites`:
// VitePress does not adjust relative links that point into rewritten pages.
// Nothing under docs/ is edited for the site.
//
// Broken links fail the build: VitePress reports links to missing pages
// (`ignoreDeadLinks` stays off), and the `repoFileLinks` plugin below checks
// links to other repository files (the .proto, SDK examples) and publishes
// the ones that exist under the same path.
import fs from 'node:fs'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import { defineConfig } from 'vitepress'
import type MarkdownIt from 'markdown-it'

const here = path.dirname(fileURLToPath(import.meta.url))
const website = path.resolve(here, '..')
const repo = path.resolve(website, '..')
const stage = path.join(website, '.stage')

// Repository source files (.proto, SDK examples) are files, not pages (for VitePress's link handling, build and client).
process.env.VITE_EXTRA_EXTENSIONS ||= 'proto,py,rs,c,h,cc,sh,toml,bazel,lock'

const docExists = (name: string) => fs.existsSync(path.join(repo, 'docs', name))

// Links to repository files that are not pages: each must exist in the
// repository (else the build fails) and is copied to the same path under the
// site's public/ folder so the link works on the site too.
function repoFileLinks(md: MarkdownIt) {
  const pageLink = /\.(md|html)$|\/$|^[^.]*$/
  md.core.ruler.push('repo_file_links', (state) => {
    const env = state.env as { realPath?: string; path?: string }
    const source = env.realPath || env.path
    if (!source) return
    const walk = (tokens: any[]) => {
      for (const t of tokens) {
        if (t.children) walk(t.children)
        if (t.type !== 'link_open') continue
        const href: string = t.attrGet('href') || ''
        if (!href || href.startsWith('#') || /^[a-z][a-z0-9+.-]*:/i.test(href) || href.startsWith('//')) continue
        const target = href.replace(/[?#].*$/, '')
        if (pageLink.test(target)) continue // pages: VitePress's own dead-link check
        const inStage = target.startsWith('/')
          ? path.join(stage, target)
          : path.resolve(path.dirname(source), decodeURIComponent(target))
        const rel = path.relative(stage, inStage)
        const file = path.join(repo, rel)
        if (rel.startsWith('..') || !fs.existsSync(file) || !fs.statSync(file).isFile()) {
          throw new Error(`broken link in ${path.relative(stage, source)}: ${href} (no file ${rel} in the repository)`)
        }
        const out = path.join(stage, 'public', rel)
        fs.mkdirSync(path.dirname(out), { recursive: true })
        fs.copyFileSync(file, out)
      }
    }
    walk(state.tokens)
  })
}

const sidebar = [
  {
    text: 'Concepts',
    items: [
      { text: 'Overview', link: '/docs/' },
      { text: 'Ubiquitous language', link: '/docs/ubiquitous-language' },
    ],
  },
  {
    text: 'API',
    items: [
      { text: 'API reference', link: '/docs/api' },
      { text: 'Decisions across streams (DCB)', link: '/docs/dcb' },
    ],
  },
  {
    text: 'Operations',
    items: [
      ...(docExists('operations.md') ? [{ text: 'Operations', link: '/docs/operations' }] : []),
      { text: 'PostgreSQL backend', link: '/docs/postgres' },
    ],
  },
  { text: 'Architecture', items: [{ text: 'Architecture', link: '/docs/architecture' }] },
  { text: 'Benchmarks', items: [{ text: 'Benchmarks', link: '/docs/benchmarks' }] },
  {
    text: 'SDKs',
    items: [
      { text: 'TypeScript', link: '/sdks/ts/README' },
      { text: 'Python', link: '/sdks/python/README' },
      { text: 'Rust', link: '/sdks/rust/README' },
    ],
  },
]

export default defineConfig({
  title: 'eventstore',
  description: 'A gRPC event store server in C: streams, a gap-free global log, subscriptions',
  srcDir: '.stage',
  outDir: 'dist',
  cacheDir: '.vitepress/cache',
  lastUpdated: false,
  markdown: {
    config: (md) => repoFileLinks(md),
  },
  themeConfig: {
    nav: [
      { text: 'Docs', link: '/docs/' },
      { text: 'API', link: '/docs/api' },
      { text: 'SDKs', link: '/sdks/ts/README' },
    ],
    sidebar,
    outline: [2, 3],
    search: { provider: 'local' },
  },
})
